"""Re-rank a first-stage run on BEIR-layout folders and report nDCG@10, MRR@10, R@100, MAP, significance and latency.

Examples:
    python scripts/evaluate.py --data ../shared/data/scifact                       # BM25 alone
    python scripts/evaluate.py --data ../shared/data/cisi ../shared/data/cacm \\
        --models ce:models/cross-encoder mice:models/mice --depth 100 --json out/evaluation.json
    python scripts/evaluate.py --data my_beir_folder --run my_first_stage.trec --models models/mice --max-queries 50

A model is ``ce:PATH`` (any sentence-transformers CrossEncoder folder or Hub id), ``mice:PATH`` (a MICE folder,
re-ranked with pre-encoded documents), or a bare path whose ``config.json`` decides. ``bm25`` names the first stage.
"""

from __future__ import annotations

import argparse
import sys

import torch

from evaluation.beir import BeirFormatError
from evaluation.harness import evaluate_systems, write_json
from evaluation.report import markdown_report, write_markdown
from evaluation.rerankers import ModelPathError
from indexing.store import StoreError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="one or more BEIR-layout folders")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (qrels/<split>.tsv; default test)")
    parser.add_argument("--models", nargs="*", default=["bm25"], help="bm25, ce:PATH, mice:PATH or PATH (default bm25)")
    parser.add_argument("--depth", type=int, default=100, help="first-stage documents re-ranked per query (100)")
    parser.add_argument(
        "--run", nargs="+", help="TREC run file(s) as first stage, one per --data folder (default BM25)"
    )
    parser.add_argument("--first-stage-k", type=int, default=1000, help="documents BM25 retrieves per query (1000)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents scored per forward pass (32)")
    parser.add_argument("--max-queries", type=int, help="evaluate a random sample of at most this many queries")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query sample (0)")
    parser.add_argument("--baseline", help="system the significance markers refer to (default: the first stage)")
    parser.add_argument("--max-p", type=float, default=0.05, help="significance level of the paired t-test (0.05)")
    parser.add_argument("--device", help="torch device for the models (default: sentence-transformers' choice / CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); recorded in the JSON")
    parser.add_argument(
        "--cache", help="folder for stores of MICE document states kept between runs, or an index built by mice index"
    )
    parser.add_argument("--save-runs", help="also write every run as TREC files under this folder")
    parser.add_argument("--mteb", help="also run every model through mteb.evaluate; MTEB's results go to this folder")
    parser.add_argument("--json", default="evaluation.json", help="where to write the JSON report (evaluation.json)")
    parser.add_argument("--markdown", help="where to write the markdown table (default: printed only)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = evaluate_systems(
            args.data,
            args.models,
            split=args.split,
            depth=args.depth,
            run_files=args.run,
            first_stage_k=args.first_stage_k,
            batch_size=args.batch_size,
            max_queries=args.max_queries,
            seed=args.seed,
            max_p=args.max_p,
            baseline=args.baseline,
            device=args.device,
            cache_folder=args.cache,
            runs_folder=args.save_runs,
            mteb_folder=args.mteb,
            show_progress=not args.no_progress,
        )
    except (BeirFormatError, ModelPathError, StoreError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {write_json(report, args.json)}")
    if args.markdown:
        print(f"wrote {write_markdown(report, args.markdown)}")
    print(markdown_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
