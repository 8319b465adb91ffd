"""Load and validate a BEIR-layout folder; read, write and cut first-stage runs.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl`` (``{"_id", "text"}``) and
``qrels/<split>.tsv`` (header ``query-id corpus-id score``, integer scores). Every id is read as a string. Problems
are reported with the file and line, so a user can fix their own collection. A run is ``{query_id: {doc_id: score}}``
(TREC run files: ``qid Q0 docid rank score tag``).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


class BeirFormatError(ValueError):
    """A folder or file that does not follow the BEIR layout."""


@dataclass
class BeirData:
    """One split of a BEIR collection: the whole corpus, the judged queries of the split, and their qrels."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels
    split: str
    all_queries: dict[str, str] = field(default_factory=dict, repr=False)

    def document_text(self, doc_id: str) -> str:
        """The text a model sees for a document: ``title + " " + text`` (as BEIR's re-ranker does)."""
        return document_text(self.corpus[doc_id])


def read_jsonl(path: Path, required: tuple[str, ...], unique: str | None = None) -> list[dict]:
    """Read a JSON-lines file, checking that each record has the required keys (and, if given, that the ``unique``
    field, read as a string, never repeats: a repeated id would let one record silently replace another)."""
    if not path.is_file():
        raise BeirFormatError(
            f"{path} is missing: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
        )
    records = []
    lines: dict[str, list[int]] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BeirFormatError(f"{path}:{line_number} is not valid JSON ({error.msg})") from error
            missing = [key for key in required if key not in record]
            if missing:
                raise BeirFormatError(
                    f"{path}:{line_number} lacks the field(s) {missing}; BEIR records need {list(required)}"
                )
            records.append(record)
            if unique is not None:
                lines.setdefault(str(record[unique]), []).append(line_number)
    if not records:
        raise BeirFormatError(f"{path} holds no records")
    repeated = {key: found for key, found in lines.items() if len(found) > 1}
    if repeated:
        shown = "; ".join(f"{key!r} on lines {', '.join(map(str, found))}" for key, found in list(repeated.items())[:5])
        raise BeirFormatError(
            f"{path} repeats {len(repeated)} {unique} value(s): {shown}{' ...' if len(repeated) > 5 else ''}; "
            f"every {unique} must be unique"
        )
    return records


def read_qrels(path: Path) -> Qrels:
    """Read ``qrels/<split>.tsv``; the header line is optional, scores must be integers."""
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise BeirFormatError(f"{path} is missing (splits available: {available or 'none'})")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (line_number == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise BeirFormatError(
                    f"{path}:{line_number} has {len(row)} columns; expected query-id, corpus-id, score"
                )
            query_id, doc_id, score = row
            try:
                qrels.setdefault(query_id, {})[doc_id] = int(score)
            except ValueError as error:
                raise BeirFormatError(f"{path}:{line_number}: score {score!r} is not an integer") from error
    if not qrels:
        raise BeirFormatError(f"{path} holds no judgements")
    return qrels


def read_corpus(path: str | Path) -> dict[str, dict[str, str]]:
    """``corpus.jsonl`` as ``{doc_id: {"title", "text"}}`` (a missing title is ``""``)."""
    return {
        str(doc["_id"]): {"title": doc.get("title") or "", "text": doc["text"] or ""}
        for doc in read_jsonl(Path(path), ("_id", "text"), unique="_id")
    }


def document_text(document: dict[str, str]) -> str:
    """The text a model sees for a document: ``title + " " + text`` (as BEIR's re-ranker does)."""
    return f"{document['title']} {document['text']}".strip()


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Load one split of a BEIR folder; queries are restricted to those judged in the split.

    Raises:
        BeirFormatError: the folder is not in BEIR layout, a file is malformed, or the qrels name a query or a
            document that the collection does not hold.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BeirFormatError(
            f"{folder} is not a folder; pass a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)"
        )
    corpus = read_corpus(folder / "corpus.jsonl")
    all_queries = {
        str(q["_id"]): q["text"] for q in read_jsonl(folder / "queries.jsonl", ("_id", "text"), unique="_id")
    }
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")

    unknown_queries = sorted(set(qrels) - set(all_queries))
    if unknown_queries:
        raise BeirFormatError(
            f"qrels/{split}.tsv names {len(unknown_queries)} query id(s) missing from queries.jsonl, "
            f"e.g. {unknown_queries[:3]}"
        )
    unknown_docs = sorted({d for judged in qrels.values() for d in judged} - set(corpus))
    if unknown_docs:
        raise BeirFormatError(
            f"qrels/{split}.tsv names {len(unknown_docs)} document id(s) missing from corpus.jsonl, "
            f"e.g. {unknown_docs[:3]}"
        )
    queries = {query_id: all_queries[query_id] for query_id in qrels}
    return BeirData(folder.name, corpus, queries, qrels, split, all_queries)


def subsample_queries(data: BeirData, max_queries: int | None, seed: int = 0) -> BeirData:
    """At most ``max_queries`` judged queries, drawn reproducibly with ``seed`` (all of them when ``None``)."""
    if max_queries is None or max_queries >= len(data.queries):
        return data
    if max_queries < 1:
        raise ValueError(f"max_queries must be at least 1, got {max_queries}")
    kept = sorted(random.Random(seed).sample(sorted(data.queries), max_queries))
    return replace(data, queries={q: data.queries[q] for q in kept}, qrels={q: data.qrels[q] for q in kept})


def top_documents(ranking: dict[str, float], depth: int) -> list[str]:
    """Document ids of a ranking, best first (ties broken by id, so every system sees the same order)."""
    return [doc_id for doc_id, _ in sorted(ranking.items(), key=lambda item: (-item[1], item[0]))][:depth]


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``, whitespace-separated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run file {path} does not exist")
    run: Run = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise BeirFormatError(
                    f"{path}:{line_number} has {len(parts)} fields; a TREC run line is 'qid Q0 docid rank score tag'"
                )
            query_id, _, doc_id, rank, score, _ = parts
            try:
                int(rank)
                run.setdefault(query_id, {})[doc_id] = float(score)
            except ValueError as error:
                raise BeirFormatError(
                    f"{path}:{line_number}: rank {rank!r} or score {score!r} is not a number"
                ) from error
    if not run:
        raise BeirFormatError(f"{path} holds no run lines")
    return run


def write_trec_run(run: Run, path: str | Path, tag: str = "mice") -> None:
    """Write a run in TREC format, each query's documents by decreasing score."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for query_id, scores in run.items():
            ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                handle.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")
