"""Effectiveness of one model on several serving backends (torch, ONNX fp32, ONNX int8) on the same candidates.

BM25 (the shared first stage) retrieves, each backend's re-ranker (`serving.load_reranker`) re-ranks the top
`--depth` through the evaluation harness (`evaluation.harness.rerank`: documents encoded per chunk of queries, each
query timed), and ir-measures scores every run against the qrels, with paired t-tests between backends; what int8
quantisation costs shows as the difference from fp32. A backend written `BACKEND:key-values` scores MICE from its
documents' cached interaction keys and values instead of their states. Prints one JSON line.

    python scripts/evaluate_backends.py --model MODEL --data ../shared/data/debian-known-item \
        --backends onnx,onnx-int8,onnx-int8-query,onnx-int8-query:key-values
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from evaluation.harness import bm25_first_stage, rerank, subsample_queries, summarize_latency
from evaluation.metrics import compare_runs
from evaluation.rerankers import ServingReranker
from ranking_data.beir import load_beir
from serving.rerankers import BACKENDS, load_reranker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="MICE or cross-encoder folder (with onnx/ for ONNX backends)")
    parser.add_argument("--data", required=True, help="a BEIR-layout folder")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--backends",
        default="onnx,onnx-int8",
        help=f"comma-separated, of {', '.join(BACKENDS)}, each optionally with ':key-values' (MICE)",
    )
    parser.add_argument("--depth", type=int, default=20, help="BM25 candidates re-ranked per query")
    parser.add_argument("--max-queries", type=int, help="a reproducible sample of the judged queries")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    backends = {name: name.partition(":") for name in args.backends.split(",")}
    for name, (_, _, form) in backends.items():
        if form not in ("", "key-values"):
            parser.error(f"--backends: {name!r}: the only form after ':' is 'key-values'")
    data = subsample_queries(load_beir(args.data, args.split), args.max_queries)
    candidates, _ = bm25_first_stage(data, k=args.depth)
    runs, seconds, latency = {"bm25": candidates}, {}, {}
    for name, (backend, _, form) in backends.items():
        reranker = load_reranker(args.model, backend, key_values=bool(form), threads=args.threads)
        start = time.perf_counter()
        result = rerank(ServingReranker(reranker, name, args.model), data, candidates, args.depth, show_progress=False)
        runs[name] = result.run
        seconds[name] = round(time.perf_counter() - start, 1)
        latency[name] = {**summarize_latency(result.query_ms), "document_encoding_s": result.preparation_seconds}
    comparison = compare_runs(data.qrels, runs, ("ndcg@10", "mrr@10"), 0.05)
    report = {
        "model": str(args.model),
        "data": str(args.data),
        "split": args.split,
        "queries": len(data.queries),
        "depth": args.depth,
        "scores": comparison["scores"],
        "p_values": comparison["p_values"],
        "seconds": seconds,
        "latency": latency,
        "load_avg": os.getloadavg(),
    }
    line = json.dumps(report)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
