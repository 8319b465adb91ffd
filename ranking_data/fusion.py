"""Score fusion of first-stage runs: per-query min-max normalisation and the weighted sum of normalised runs (the
BM25 + dense "hybrid" of ``../shared/docs/offline.md``), shared by the evaluation's and the index's hybrid first stage.
"""

from __future__ import annotations

from .beir import Run


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
