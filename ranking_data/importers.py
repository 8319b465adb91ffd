"""Import published teacher files into the teacher-dataset schema (``ranking_data.teacher_data``).

- Hofstätter et al. (2020), "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
  Distillation" (arXiv 2010.02666), Zenodo record 4068216: tab-separated ``pos_score neg_score qid pos_pid neg_pid``
  (e.g. ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``), with texts from the MS MARCO-style
  ``collection.tsv`` (``pid<TAB>text``) and ``queries.tsv`` (``qid<TAB>text``).
- TREC run files (``qid Q0 docid rank score tag``), such as Rank-DistiLLM's LLM re-rankings (Schlatt et al.,
  ECIR 2025; Zenodo record 12528410): ranks and scores.

Errors name the file and line (or the query id) of the offending entry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from .beir import Qrels, read_trec_run
from .teacher_data import TeacherDataError, TeacherDataset

logger = logging.getLogger(__name__)

HOFSTAETTER = "Hofstätter et al. (2020), arXiv 2010.02666"


def read_id_text_tsv(path: str | Path, wanted: Mapping[str, str] | None = None) -> dict[str, str]:
    """Read an MS MARCO-style ``id<TAB>text`` file, keeping only the ids in ``wanted`` when given.

    ``wanted`` maps each needed id to where the teacher file names it (e.g. ``"scores.tsv:12"``), in file order; a
    needed id that the file lacks raises :class:`TeacherDataError` naming the first such place.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected an id<TAB>text file (MS MARCO collection/queries)")
    texts: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            identifier, tab, text = line.partition("\t")
            if not tab:
                raise TeacherDataError(f"{path}:{line_number} has no tab; expected 'id<TAB>text'")
            if wanted is None or identifier in wanted:
                texts[identifier] = text
    if wanted is not None:
        missing = [identifier for identifier in wanted if identifier not in texts]
        if missing:
            raise TeacherDataError(
                f"{wanted[missing[0]]} names id {missing[0]!r}, which {path} does not hold ({len(missing)} id(s) "
                f"missing in all, e.g. {missing[:3]}); pass the matching collection/queries file"
            )
    return texts


def import_hofstaetter_scores(
    scores_path: str | Path, collection_path: str | Path, queries_path: str | Path, max_lines: int | None = None
) -> TeacherDataset:
    """Import a Hofstätter-style triple score file as one list per query.

    Each line ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`` adds both passages to the query's list;
    the positive is labelled 1 and the negatives 0 (the triples come from MS MARCO's judged positives). A passage
    scored on several lines of the same query (the positive usually is) gets the mean of its scores; a spread
    above 1e-3 is logged, since a deterministic teacher should give it one score. Lists are sorted by
    decreasing score, so a pairwise objective can rebuild every (positive, negative) margin of the file.

    Args:
        scores_path: the score file.
        collection_path: ``collection.tsv`` (``pid<TAB>passage``); only the passages the scores name are kept.
        queries_path: ``queries.tsv`` (``qid<TAB>query``), e.g. ``queries.train.tsv``.
        max_lines: read only the first lines (a quick subset of the 40M triples).

    Raises:
        TeacherDataError: a malformed line, a NaN or infinite score, a passage both positive and negative for a
            query, or an id missing from the collection or queries (each naming the line); an empty file.
    """
    scores_path = Path(scores_path)
    if not scores_path.is_file():
        raise FileNotFoundError(f"{scores_path} does not exist")
    lists: dict[str, dict[str, list[float]]] = {}
    labels: dict[str, dict[str, int]] = {}
    first_line: dict[str, dict[str, str]] = {"query": {}, "passage": {}}
    with scores_path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if max_lines is not None and line_number > max_lines:
                break
            if not line.strip():
                continue
            fields = line.rstrip("\n").rstrip("\r").split("\t")
            if len(fields) != 5:
                raise TeacherDataError(
                    f"{scores_path}:{line_number} has {len(fields)} tab-separated fields; expected "
                    "pos_score, neg_score, qid, pos_pid, neg_pid"
                )
            try:
                pos_score, neg_score = float(fields[0]), float(fields[1])
            except ValueError as error:
                raise TeacherDataError(
                    f"{scores_path}:{line_number}: scores {fields[0]!r}, {fields[1]!r} are not numbers"
                ) from error
            if not (math.isfinite(pos_score) and math.isfinite(neg_score)):
                raise TeacherDataError(
                    f"{scores_path}:{line_number} has a NaN or infinite score ({fields[0]}, {fields[1]}) "
                    f"for query {fields[2]!r}; fix or drop the line"
                )
            query_id, pos_pid, neg_pid = fields[2], fields[3], fields[4]
            first_line["query"].setdefault(query_id, f"{scores_path}:{line_number}")
            for pid, score, label in ((pos_pid, pos_score, 1), (neg_pid, neg_score, 0)):
                first_line["passage"].setdefault(pid, f"{scores_path}:{line_number}")
                if labels.setdefault(query_id, {}).setdefault(pid, label) != label:
                    raise TeacherDataError(
                        f"{scores_path}:{line_number}: passage {pid!r} is both a positive and a negative of "
                        f"query {query_id!r}"
                    )
                lists.setdefault(query_id, {}).setdefault(pid, []).append(score)
    if not lists:
        raise TeacherDataError(f"the training set is empty: {scores_path} holds no score lines")

    queries = read_id_text_tsv(queries_path, first_line["query"])
    documents = read_id_text_tsv(collection_path, first_line["passage"])
    rows = []
    spread_examples = []
    for query_id, passages in lists.items():
        scores = {pid: sum(values) / len(values) for pid, values in passages.items()}
        spread_examples += [(query_id, p) for p, v in passages.items() if max(v) - min(v) > 1e-3]
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        rows.append(
            {
                "query_id": query_id,
                "document_ids": ranked,
                "scores": [scores[p] for p in ranked],
                "labels": [labels[query_id][p] for p in ranked],
            }
        )
    if spread_examples:
        logger.warning(
            "%d (query, passage) pairs got scores differing by more than 1e-3 on different lines (e.g. %s); "
            "their mean is used",
            len(spread_examples),
            spread_examples[:3],
        )
    metadata = {
        "source": str(scores_path.name),
        "format": "hofstaetter-triples",
        "teacher": {"name": scores_path.stem, "description": f"teacher scores from {HOFSTAETTER}"},
    }
    return TeacherDataset.from_records(rows, queries, documents, metadata)


def import_trec_run(
    run_path: str | Path,
    queries: Mapping[str, str] | str | Path,
    documents: Mapping[str, str] | str | Path,
    depth: int | None = None,
    qrels: Qrels | None = None,
    teacher_name: str | None = None,
) -> TeacherDataset:
    """Import a TREC run file (e.g. a Rank-DistiLLM RankZephyr re-ranking) with its scores and ranks.

    Ranks follow trec_eval: decreasing score, ties in file order; the rank column is not trusted. Both the file's
    scores and these ranks are kept (an LLM's listwise ranking often has placeholder scores: objectives such as
    ADR-MSE and DistillRankNet train on the ranks).

    Args:
        run_path: the run file (``qid Q0 docid rank score tag``).
        queries: query id → text, or an ``id<TAB>text`` file.
        documents: document id → text, or an ``id<TAB>text`` file (e.g. MS MARCO ``collection.tsv``).
        depth: keep the top ``depth`` documents per query.
        qrels: human judgements, stored as ``labels`` (0 = unjudged).
        teacher_name: recorded in the metadata (default: the file name).

    Raises:
        TeacherDataError: the run names a query or document id with no text (naming the query id), NaN scores.
    """
    run_path = Path(run_path)
    run = read_trec_run(run_path)
    rows = []
    for query_id, ranking in run.items():
        ranked = sorted(ranking, key=ranking.__getitem__, reverse=True)[:depth]
        row = {
            "query_id": query_id,
            "document_ids": ranked,
            "scores": [ranking[d] for d in ranked],
            "ranks": list(range(1, len(ranked) + 1)),
        }
        if qrels is not None:
            row["labels"] = [qrels.get(query_id, {}).get(d, 0) for d in ranked]
        rows.append(row)
    if not isinstance(queries, Mapping):
        queries = read_id_text_tsv(queries, {q: f"{run_path} (query {q!r})" for q in run})
    if not isinstance(documents, Mapping):
        needed: dict[str, str] = {}
        for row in rows:
            for doc_id in row["document_ids"]:
                needed.setdefault(doc_id, f"{run_path} (query {row['query_id']!r})")
        documents = read_id_text_tsv(documents, needed)
    metadata = {
        "source": run_path.name,
        "format": "trec-run",
        "teacher": {"name": teacher_name or run_path.stem, "description": f"ranking from the TREC run {run_path.name}"},
    }
    return TeacherDataset.from_records(rows, queries, documents, metadata)
