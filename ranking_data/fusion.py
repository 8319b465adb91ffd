"""Score fusion: per-query min-max normalisation and the weighted sum of normalised runs (the BM25 + dense "hybrid" of
``../shared/docs/offline.md``), shared by the evaluation's and the index's hybrid first stage; and the interpolation of
a re-ranker with the first stage it re-ranked.
"""

from __future__ import annotations

from .beir import Run, top_documents


def normalise_per_query(run: Run) -> Run:
    """Each query's scores min-max scaled to [0, 1] (best 1, worst 0; a query whose scores are all equal gets 1s)."""
    normalised: Run = {}
    for query_id, scores in run.items():
        if not scores:
            normalised[query_id] = {}
            continue
        low, high = min(scores.values()), max(scores.values())
        span = high - low
        normalised[query_id] = {d: (s - low) / span if span > 0 else 1.0 for d, s in scores.items()}
    return normalised


def fuse_runs(runs: list[Run], weights: list[float], k: int | None = None) -> Run:
    """Weighted sum of per-query min-max normalised runs over the union of their documents (a document missing from
    a run gets 0 from it, that run's floor), keeping the top ``k`` of each query (all when None)."""
    if len(runs) != len(weights) or not runs:
        raise ValueError(f"give one weight per run: {len(runs)} run(s), {len(weights)} weight(s)")
    normalised = [normalise_per_query(run) for run in runs]
    fused: Run = {}
    for query_id in dict.fromkeys(q for run in runs for q in run):
        scores: dict[str, float] = {}
        for run, weight in zip(normalised, weights, strict=True):
            for doc_id, score in run.get(query_id, {}).items():
                scores[doc_id] = scores.get(doc_id, 0.0) + weight * score
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        fused[query_id] = dict(ranked[:k] if k is not None else ranked)
    return fused


def with_rest_of_ranking(top: dict[str, float], ranking: dict[str, float]) -> dict[str, float]:
    """A query's re-scored top documents followed by the rest of the first-stage ``ranking`` in its order, scored
    below all of them, so that recall and MAP stay comparable with the first stage at any re-ranking depth."""
    floor = min(top.values(), default=0.0)
    rest = [doc_id for doc_id in top_documents(ranking, len(ranking)) if doc_id not in top]
    return {**top, **{doc_id: floor - 1.0 - rank for rank, doc_id in enumerate(rest)}}


def interpolate(first_stage: Run, reranked: Run, depth: int, weight: float) -> Run:
    """Each query's re-ranked top ``depth`` scored ``(1 - weight) × re-ranker + weight × first stage``, both min-max
    normalised over those documents, then the rest of the first stage (:func:`with_rest_of_ranking`).

    A first stage that fuses BM25 and a dense model carries evidence a re-ranker can miss; interpolating is the usual
    last step of such pipelines. ``weight`` 0 keeps the re-ranker's order. Tune it on another split than the one
    reported (``scripts/interpolate_first_stage.py``).

    Raises:
        ValueError: ``weight`` outside [0, 1], or ``reranked`` is not a re-ranking of ``first_stage`` at ``depth``
            (a query or a re-ranked document the first stage does not have).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], got {weight}")
    result: Run = {}
    for query_id, ranking in first_stage.items():
        if query_id not in reranked:
            raise ValueError(f"query {query_id} of the first stage is missing from the re-ranked run")
        # The re-ranked documents are the run's top: the rest sits below them (with_rest_of_ranking).
        top = top_documents(reranked[query_id], depth)
        if not set(top) <= set(ranking):
            raise ValueError(
                f"query {query_id}: the re-ranked run's top {depth} holds documents the first stage did not retrieve; "
                "give the first stage it re-ranked and the same depth"
            )
        pair = [{query_id: {d: reranked[query_id][d] for d in top}}, {query_id: {d: ranking[d] for d in top}}]
        fused = fuse_runs(pair, [1.0 - weight, weight])[query_id]
        result[query_id] = with_rest_of_ranking(fused, ranking)
    return result
