"""Re-rank a first-stage run on BEIR-layout folders and report nDCG@10, MRR@10, R@100, MAP, significance and latency.

    mice evaluate --data ../shared/data/scifact                       # BM25 alone
    mice evaluate --data ../shared/data/cisi ../shared/data/cacm \\
        --models ce:models/cross-encoder mice:models/mice --depth 100 --json out/evaluation.json
    mice evaluate --data my_beir_folder --run my_first_stage.trec --models models/mice --max_queries 50
    mice evaluate --data ../shared/data/debian-known-item --first_stage hybrid:models/embedder \\
        --models mice:models/mice                  # BM25 + dense (faiss) first stage, then MICE

A model is ``ce:PATH`` (any sentence-transformers CrossEncoder folder or Hub id), ``mice:PATH`` (a MICE folder,
re-ranked with pre-encoded documents), or a bare path whose ``config.json`` decides. ``bm25`` names the first stage.
The first stage is BM25, ``--first_stage dense:PATH`` (any SentenceTransformer folder: exact inner product with
faiss), ``--first_stage hybrid:PATH`` (BM25 and dense, per-query min-max normalised and summed) or ``--run`` files.
The flags are the fields of ``evaluation.harness.EvaluationConfig``.
"""

from __future__ import annotations

import argparse

from mice_rerank.cli import add_dataclass_arguments, dataclass_values

ON_INTERRUPT = "interrupted: with --save-runs, the same command again reuses the runs already recorded"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from evaluation.harness import EvaluationConfig

    add_dataclass_arguments(parser, EvaluationConfig, "evaluation")
    output = parser.add_argument_group("output")
    output.add_argument("--json", default="evaluation.json", help="where to write the JSON report (evaluation.json)")
    output.add_argument("--markdown", help="where to write the markdown tables (default: printed only)")
    output.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); recorded in the JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from evaluation.harness import EvaluationConfig, evaluate, write_json
    from evaluation.report import markdown_report, write_markdown

    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(EvaluationConfig(**dataclass_values(args, EvaluationConfig)))
    print(f"wrote {write_json(report, args.json)}")
    if args.markdown:
        print(f"wrote {write_markdown(report, args.markdown)}")
    print(markdown_report(report))
    return 0
