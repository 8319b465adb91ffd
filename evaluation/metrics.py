"""Effectiveness metrics (ir-measures, i.e. trec_eval) and paired significance tests (scipy), never by hand.

Metric names are ``ndcg@10`` (trec_eval's nDCG, linear gain), ``mrr@10``, ``recall@100`` and ``map`` (average
precision over everything a run retrieves); any other ir-measures name (``P@5``, ``nDCG@20``, ...) works too. Every
query of the qrels counts, and a query the run does not rank scores zero (trec_eval ``-c``), which is how the
reference figures in ``../shared/data/README.md`` were measured. ir-measures is used rather than ranx because
ranx's numba compilation costs minutes per process on a small CPU machine; the two agree on these metrics.
"""

from __future__ import annotations

import ir_measures
from scipy import stats

from ranking_data.beir import Qrels, Run

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")
_IR_MEASURES_NAMES = {"ndcg@10": "nDCG@10", "mrr@10": "RR@10", "recall@100": "R@100", "map": "AP"}


def _measure(metric: str):
    name = _IR_MEASURES_NAMES.get(metric, metric)
    try:
        return ir_measures.parse_measure(name)
    except (NameError, ValueError, SyntaxError) as error:
        raise ValueError(f"unknown metric {metric!r}; use {list(DEFAULT_METRICS)} or an ir-measures name") from error


def per_query_scores(qrels: Qrels, run: Run, metrics: tuple[str, ...] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: score}}`` for every query of ``qrels`` (zero where the run ranks nothing)."""
    if not any(qrels.values()):
        raise ValueError("the qrels hold no judged query, so there is nothing to evaluate")
    measures = {_measure(metric): metric for metric in metrics}
    scores = {metric: dict.fromkeys(qrels, 0.0) for metric in metrics}
    run = {query_id: docs for query_id, docs in run.items() if docs and query_id in qrels}
    if run:
        for result in ir_measures.iter_calc(list(measures), qrels, run):
            scores[measures[result.measure]][result.query_id] = float(result.value)
    return scores


def evaluate_run(qrels: Qrels, run: Run, metrics: tuple[str, ...] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels``.

    Example:
        >>> evaluate_run({"q1": {"d2": 1}}, {"q1": {"d1": 2.0, "d2": 1.0}}, ("mrr@10",))
        {'mrr@10': 0.5}
    """
    scores = per_query_scores(qrels, run, metrics)
    return {metric: sum(values.values()) / len(values) for metric, values in scores.items()}


def paired_t_test(first: dict[str, float], second: dict[str, float]) -> float:
    """Two-sided p-value of the paired Student's t-test between per-query scores (1.0 when they never differ)."""
    queries = sorted(first)
    differences = [first[q] - second[q] for q in queries]
    if len(queries) < 2:
        return 1.0
    if all(d == differences[0] for d in differences):  # zero variance: scipy would return NaN
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_rel([first[q] for q in queries], [second[q] for q in queries]).pvalue)


def compare_runs(
    qrels: Qrels,
    runs: dict[str, Run],
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    max_p: float = 0.05,
) -> dict:
    """Paired two-sided Student's t-tests (scipy ``ttest_rel``) between every pair of systems, per metric.

    Returns ``{"test", "max_p", "metrics", "scores": {system: {metric: mean}}, "p_values": {system: {other:
    {metric: p}}}, "better_than": {system: {metric: [systems it beats with p < max_p]}}}``.
    """
    per_query = {name: per_query_scores(qrels, run, metrics) for name, run in runs.items()}
    result = {
        "test": "paired two-sided Student's t-test (scipy.stats.ttest_rel)",
        "max_p": max_p,
        "metrics": list(metrics),
        "scores": {
            name: {metric: sum(values.values()) / len(values) for metric, values in scores.items()}
            for name, scores in per_query.items()
        },
        "p_values": {name: {} for name in runs},
        "better_than": {name: {metric: [] for metric in metrics} for name in runs},
    }
    for name in runs:
        for other in runs:
            if other == name:
                continue
            p_values = {metric: paired_t_test(per_query[name][metric], per_query[other][metric]) for metric in metrics}
            result["p_values"][name][other] = p_values
            for metric in metrics:
                if p_values[metric] < max_p and result["scores"][name][metric] > result["scores"][other][metric]:
                    result["better_than"][name][metric].append(other)
    return result
