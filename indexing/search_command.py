"""Search a MICE index: a first stage (BM25, dense or hybrid), then MICE re-ranking from the stored states.

Examples:
    mice search my-index "real-time strategy game"
    mice search my-index --queries queries.jsonl --output run.trec --first-stage hybrid --depth 100 --top-k 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "search a MICE index: one query, or a queries.jsonl file into a TREC run"
SNIPPET_CHARS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .first_stage import FIRST_STAGES

    parser.add_argument("index", help="index folder built by mice index")
    parser.add_argument("query", nargs="?", help="query text (or --queries FILE)")
    parser.add_argument("--queries", help="queries.jsonl ({_id, text} per line) to search in one go")
    parser.add_argument("--output", help="TREC run file to write (with --queries)")
    parser.add_argument("--first-stage", choices=FIRST_STAGES, default="bm25", help="candidate source (bm25)")
    parser.add_argument("--depth", type=int, default=100, help="candidates MICE re-ranks per query (100)")
    parser.add_argument("--top-k", type=int, default=10, help="results kept per query (10)")
    parser.add_argument("--model", help="MICE model to score with (default: the one the index was built with)")
    parser.add_argument("--embedder", help="SentenceTransformer for dense queries (default: the index's)")
    parser.add_argument("--batch-size", type=int, default=64, help="candidates per forward pass (64)")
    parser.add_argument("--device", help="torch device (default: CPU)")
    parser.add_argument("--json", action="store_true", help="print results (one query) or timings as JSON")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ranking_data.beir import BeirFormatError, read_jsonl, write_trec_run

    from .build import IndexBuildError
    from .mice_index import EmptyIndexError, MiceIndex
    from .store import StoreError

    if (args.query is None) == (args.queries is None):
        print("error: give either a query text or --queries FILE", file=sys.stderr)
        return 2
    if args.queries and not args.output:
        print("error: --queries needs --output RUN.trec", file=sys.stderr)
        return 2
    try:
        index = MiceIndex.load(args.index, model=args.model, embedder=args.embedder, device=args.device)
        index.batch_size = args.batch_size
        if args.query is not None:
            hits = index.search(args.query, k=args.top_k, depth=args.depth, first_stage=args.first_stage)
            if args.json:
                print(json.dumps([hit.__dict__ for hit in hits], indent=2))
            elif not hits:
                print(f"no document matched (the {args.first_stage} first stage found no candidate)")
            for rank, hit in enumerate(hits if not args.json else [], start=1):
                snippet = hit.text if len(hit.text) <= SNIPPET_CHARS else hit.text[:SNIPPET_CHARS].rstrip() + "…"
                print(f"{rank:>3}  {hit.score:8.3f}  {hit.document_id}  {snippet}")
            return 0
        queries = {str(q["_id"]): q["text"] for q in read_jsonl(Path(args.queries), ("_id", "text"), unique="_id")}
        result = index.search_many(queries, k=args.top_k, depth=args.depth, first_stage=args.first_stage)
        write_trec_run(result.run, args.output, tag=f"mice-{args.first_stage}")
    except (EmptyIndexError, StoreError, IndexBuildError, BeirFormatError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    p50, p95 = np.percentile(result.milliseconds, [50, 95]).tolist()
    if args.json:
        timing = {"queries": len(result.milliseconds), "p50_ms": p50, "p95_ms": p95}
        print(json.dumps({"first_stage": args.first_stage, "depth": args.depth, **timing}))
    else:
        print(
            f"searched {len(result.milliseconds)} queries ({args.first_stage}, depth {args.depth}): p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms per query; wrote {args.output}"
        )
    return 0
