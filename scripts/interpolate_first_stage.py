"""Interpolate re-rankers with the first stages they re-ranked (``ranking_data.fusion.interpolate``): tune the weight
on one split, report it on another; prints one JSON object.

    # tune on dev: every weight of the grid, for every pipeline
    python scripts/interpolate_first_stage.py --data DEBIAN --split dev --depth 20 \\
        --pipeline bm25=runs_dev_bm25/debian/bm25.trec,runs_dev_bm25/debian/mice.trec \\
        --pipeline hybrid=runs_dev_hybrid/debian/hybrid.trec,runs_dev_hybrid/debian/mice.trec --json dev.json
    # report on test at each pipeline's dev-best weight, with paired t-tests between all runs
    python scripts/interpolate_first_stage.py --data DEBIAN --split test --depth 20 --pipeline ... --tuned dev.json

Runs are TREC files as ``mice evaluate --save-runs`` writes them: the first stage's, and the re-ranker's (its top
``--depth`` re-scored, the rest of the first stage below).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.harness import write_json
from evaluation.metrics import compare_runs, evaluate_run
from ranking_data.beir import BeirFormatError, load_beir, read_trec_run
from ranking_data.fusion import interpolate

METRICS = ("ndcg@10", "recall@100")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder whose qrels judge the runs")
    parser.add_argument("--split", default="test", help="qrels split (tune on one, report on another)")
    parser.add_argument("--depth", type=int, required=True, help="documents each re-ranker re-scored per query")
    parser.add_argument(
        "--pipeline", action="append", required=True, help="NAME=FIRST_STAGE_RUN,RERANKED_RUN (repeatable)"
    )
    parser.add_argument("--weights", type=float, nargs="+", default=[i / 10 for i in range(11)], help="the grid")
    parser.add_argument("--tuned", type=Path, help="a JSON this script wrote on another split: use its best weights")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def read_pipelines(specs: list[str]) -> dict[str, tuple]:
    pipelines = {}
    for spec in specs:
        name, _, paths = spec.partition("=")
        files = paths.split(",")
        if not name or len(files) != 2:
            raise ValueError(f"--pipeline {spec!r}: write NAME=FIRST_STAGE_RUN,RERANKED_RUN")
        pipelines[name] = tuple(read_trec_run(path) for path in files)
    return pipelines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = load_beir(args.data, args.split)
        pipelines = read_pipelines(args.pipeline)
        tuned = json.loads(args.tuned.read_text(encoding="utf-8"))["best_weight"] if args.tuned else None
        if tuned is not None and set(tuned) != set(pipelines):
            raise ValueError(f"{args.tuned} tuned the pipelines {sorted(tuned)}, not {sorted(pipelines)}")
        # Only the judged queries of the split count (the runs may hold more).
        pipelines = {
            name: tuple({q: run[q] for q in data.qrels if q in run} for run in runs) for name, runs in pipelines.items()
        }
        result: dict = {"data": str(args.data), "split": args.split, "depth": args.depth, "queries": len(data.qrels)}
        if tuned is None:
            grid = {
                name: {
                    str(w): evaluate_run(data.qrels, interpolate(first, reranked, args.depth, w), METRICS)
                    for w in args.weights
                }
                for name, (first, reranked) in pipelines.items()
            }
            best = {name: float(max(scores, key=lambda w: scores[w]["ndcg@10"])) for name, scores in grid.items()}
            result |= {"weights": grid, "best_weight": best, "tuned_on": "ndcg@10"}
        else:
            runs = {}
            for name, (first, reranked) in pipelines.items():
                runs[f"{name} first stage"] = first
                runs[f"{name} re-ranked"] = reranked
                runs[f"{name} interpolated ({tuned[name]:g})"] = interpolate(first, reranked, args.depth, tuned[name])
            result |= {"tuned_weights": tuned, **compare_runs(data.qrels, runs, METRICS)}
    except (ValueError, FileNotFoundError, BeirFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
