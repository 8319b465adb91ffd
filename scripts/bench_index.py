"""Measure MICE indexes on a BEIR collection and print JSON: size, bytes per token, build time, loading time, the first
query's time, nDCG@10 / MRR@10 of each first stage followed by MICE, and per-query search latency (p50, p95).

Every index is searched with the same queries in one run; nDCG@10 changes are given against the first index (build it
with --compression float32 to measure what compression costs). Optionally builds the compressed copies first.

Examples:
    python scripts/bench_index.py --data ../shared/data/debian-known-item --indexes runs/debian-float32
    python scripts/bench_index.py --data D --indexes runs/f32 --transcode float16 int8 opq64 --transcode-into runs/
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder whose queries and qrels are searched")
    parser.add_argument("--split", default="test", help="qrels split (test)")
    parser.add_argument("--indexes", nargs="+", required=True, help="index folders; the first is the reference")
    parser.add_argument("--transcode", nargs="*", default=[], help="also build these compressions of the first index")
    parser.add_argument("--transcode-into", help="folder for the transcoded indexes (default: beside the first)")
    parser.add_argument("--first-stages", nargs="+", default=["bm25"], help="bm25, dense, hybrid (bm25)")
    parser.add_argument("--depth", type=int, default=100, help="candidates re-ranked per query (100)")
    parser.add_argument("--max-queries", type=int, help="a reproducible sample of the judged queries")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--json", help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    import torch

    from evaluation.harness import subsample_queries, summarize_latency
    from evaluation.metrics import evaluate_run
    from indexing.build import transcode_index
    from indexing.mice_index import MiceIndex
    from ranking_data.beir import load_beir

    import_seconds = time.perf_counter() - began
    if args.threads:
        torch.set_num_threads(args.threads)
    data = subsample_queries(load_beir(args.data, args.split), args.max_queries)
    indexes = [Path(path) for path in args.indexes]
    target = Path(args.transcode_into) if args.transcode_into else indexes[0].parent
    for compression in args.transcode:
        output = target / f"{indexes[0].name}-{compression}"
        print(f"transcoding {indexes[0]} into {output}", file=sys.stderr)
        transcode_index(indexes[0], output, compression)
        indexes.append(output)

    report = {
        "data": str(args.data),
        "split": args.split,
        "queries": len(data.queries),
        "depth": args.depth,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "import_seconds": round(import_seconds, 3),
        "indexes": {},
    }
    first_query = next(iter(data.queries.values()))
    reference: dict[str, float] = {}
    for path in indexes:
        started = time.perf_counter()
        index = MiceIndex.load(path)
        loaded = time.perf_counter() - started
        index.search(first_query, k=10, depth=args.depth)
        info = index.info
        entry = {
            "compression": info["compression"],
            "bytes_per_token": info["bytes_per_token"],
            "fraction_of_float32": info["bytes_per_token"] / info["float32_bytes_per_token"],
            "store_bytes": info["store_bytes"],
            "documents": info["documents"],
            "tokens": info["tokens"],
            "build": info["build"],
            "load_seconds": round(loaded, 3),
            "load_and_first_query_seconds": round(time.perf_counter() - started, 3),
            "first_stages": {},
        }
        for stage in args.first_stages:
            if stage != "bm25" and "dense" not in info["first_stages"]:
                continue
            candidates = index.candidates(data.queries, args.depth, stage)
            result = index.search_many(data.queries, k=10, depth=args.depth, first_stage=stage)
            metrics = evaluate_run(data.qrels, result.run, ("ndcg@10", "mrr@10"))
            entry["first_stages"][stage] = {
                "first_stage_alone": evaluate_run(data.qrels, candidates, ("ndcg@10", "mrr@10")),
                "mice": metrics,
                "ndcg@10_change": None if stage not in reference else metrics["ndcg@10"] - reference[stage],
                "latency_ms": summarize_latency(result.milliseconds),
            }
            reference.setdefault(stage, metrics["ndcg@10"])
            print(json.dumps({str(path): {stage: entry["first_stages"][stage]}}), file=sys.stderr)
        report["indexes"][str(path)] = entry
        index.store.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
