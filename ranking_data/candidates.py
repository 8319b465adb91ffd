"""Candidate lists for training queries: a first stage's top documents, with the judged positives kept in.

Candidates come from BM25 (``ranking_data.bm25.BM25Retriever``, bm25s) or from any first-stage TREC run file (e.g.
Rank-DistiLLM's ColBERTv2 top-500). Each list records the qrels label of every document (0 when unjudged), so
objectives on human labels (BCE, Hinge, InfoNCE) can use the same teacher dataset as distillation objectives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .beir import BeirData, Qrels, Run, read_trec_run
from .bm25 import BM25Retriever

logger = logging.getLogger(__name__)


@dataclass
class CandidateList:
    """One training query's candidates in first-stage order, with their qrels labels (0 = unjudged)."""

    query_id: str
    document_ids: list[str]
    labels: list[int]


def candidates_from_ranking(
    run: Run, qrels: Qrels, depth: int, keep_positives: bool = True, query_ids: list[str] | None = None
) -> list[CandidateList]:
    """Cut each query's ranking to ``depth`` documents and attach qrels labels.

    With ``keep_positives`` every judged positive (label > 0) is in the list: positives the first stage missed take
    the places of the lowest-ranked non-positives at the tail (in qrels order), so lists stay ``depth`` long unless
    a query has more positives than that. A query the run does not cover gets its positives only.

    Args:
        run: ``{query_id: {doc_id: score}}``; documents are ranked by decreasing score.
        qrels: ``{query_id: {doc_id: grade}}`` of the training split.
        depth: documents per list.
        keep_positives: put missed positives in.
        query_ids: the queries to build lists for (default: the qrels queries, in qrels order).
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    lists = []
    uncovered = []
    for query_id in query_ids if query_ids is not None else list(qrels):
        judged = qrels.get(query_id, {})
        ranking = run.get(query_id, {})
        if not ranking:
            uncovered.append(query_id)
        ranked = [doc_id for doc_id, _ in sorted(ranking.items(), key=lambda item: item[1], reverse=True)][:depth]
        if keep_positives:
            missed = [doc_id for doc_id, grade in judged.items() if grade > 0 and doc_id not in ranked]
            excess = len(ranked) + len(missed) - depth
            if missed and excess > 0:
                negatives = [d for d in ranked if judged.get(d, 0) <= 0]
                dropped = set(negatives[max(len(negatives) - excess, 0) :])
                ranked = [d for d in ranked if d not in dropped]
            ranked += missed
        if ranked:
            lists.append(CandidateList(query_id, ranked, [judged.get(d, 0) for d in ranked]))
    if uncovered:
        logger.warning(
            "%d of %d queries have no first-stage candidates (e.g. %s)%s",
            len(uncovered),
            len(query_ids if query_ids is not None else qrels),
            uncovered[:3],
            "; their lists hold their positives only" if keep_positives else " and are left out",
        )
    return lists


def mine_bm25_candidates(
    data: BeirData, depth: int = 100, retriever: BM25Retriever | None = None, keep_positives: bool = True
) -> list[CandidateList]:
    """BM25 top-``depth`` candidates for every judged query of ``data`` (a training split of a BEIR folder).

    Pass an indexed ``retriever`` to reuse it (e.g. for a :class:`~ranking_data.teachers.BM25Teacher` too); otherwise
    the corpus is indexed here.
    """
    retriever = retriever or BM25Retriever().index(data.corpus)
    run = retriever.search({query_id: data.queries[query_id] for query_id in data.qrels}, k=depth)
    return candidates_from_ranking(run, data.qrels, depth, keep_positives)


def candidates_from_run_file(
    path: str | Path, data: BeirData, depth: int = 100, keep_positives: bool = True
) -> list[CandidateList]:
    """Candidates from a first-stage TREC run file (``qid Q0 docid rank score tag``) for the judged queries of
    ``data``; run documents missing from the corpus raise, since they could not be scored."""
    run = read_trec_run(path)
    unknown = sorted({d for q in data.qrels for d in run.get(q, {})} - set(data.corpus))
    if unknown:
        raise ValueError(f"{path} ranks {len(unknown)} document id(s) missing from the corpus, e.g. {unknown[:3]}")
    return candidates_from_ranking(run, data.qrels, depth, keep_positives)
