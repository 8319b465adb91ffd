"""Paired significance tests between saved runs judged by one BEIR split (``evaluation.metrics.compare_runs``); prints
one JSON object: each run's mean per metric and the p-values between every pair.

    python scripts/compare_runs.py --data ../shared/data/debian-known-item \\
        --run de-2d=emb/runs/debian-known-item/dense-de-2d.trec \\
        --run all-MiniLM-L6-v2=emb/runs/debian-known-item/dense-all-MiniLM-L6-v2.trec --json compare.json

Runs are TREC files, as ``mice evaluate --save-runs`` and ``scripts/embedding_experiments.py --save-runs`` write them.
Every judged query of the split counts; one a run does not rank scores zero for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.harness import write_json
from evaluation.metrics import compare_runs
from ranking_data.beir import BeirFormatError, load_beir, read_trec_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder whose qrels judge the runs")
    parser.add_argument("--split", default="test", help="qrels split (test)")
    parser.add_argument("--run", action="append", required=True, help="NAME=TREC_RUN (repeat: at least two)")
    parser.add_argument("--metrics", nargs="+", default=["ndcg@10", "recall@100"], help="ndcg@10 recall@100")
    parser.add_argument("--max-p", type=float, default=0.05, help="significance level of better_than (0.05)")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names = [spec.partition("=")[0] for spec in args.run]
        if len(args.run) < 2 or any("=" not in spec or not name for spec, name in zip(args.run, names, strict=True)):
            raise ValueError("give at least two runs, each as --run NAME=TREC_RUN")
        if len(set(names)) != len(names):
            raise ValueError(f"run names must differ, got {names}")
        data = load_beir(args.data, args.split)
        runs = {name: read_trec_run(spec.partition("=")[2]) for name, spec in zip(names, args.run, strict=True)}
        result = {"data": str(args.data), "split": args.split, "queries": len(data.qrels)}
        result |= compare_runs(data.qrels, runs, tuple(args.metrics), args.max_p)
    except (ValueError, FileNotFoundError, BeirFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
