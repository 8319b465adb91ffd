"""Encode a corpus once into a MICE index: document states (compressed), BM25, optionally dense vectors.

Examples:
    mice index --model mice-quickstart/models/mice --data ../shared/data/scifact --output scifact-index
    mice index --model M --data corpus.jsonl --output I --compression int8 --embedder path/to/sentence-transformer
    accelerate launch --num_processes 2 --multi_gpu -m mice_rerank.cli index --model M --data D --output I

An interrupted build resumes when the same command runs again; under ``accelerate launch`` (or ``torchrun``) every
process encodes its share of the shards into the same folder (on GPUs if there are, else on the CPU over gloo).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "encode a corpus once into a searchable MICE index (resumable; accelerate launch splits the work)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .build import DEFAULT_COMPRESSION, IndexConfig

    defaults = IndexConfig(model="", data="", output="")
    parser.add_argument("--model", required=True, help="MICE model folder")
    parser.add_argument("--data", required=True, help="BEIR folder or corpus.jsonl ({_id, title, text} per line)")
    parser.add_argument("--output", required=True, help="index folder (an interrupted build there resumes)")
    parser.add_argument(
        "--compression",
        default=DEFAULT_COMPRESSION,
        help=f"float32, float16, int8, pqM or opqM (M sub-quantizers, e.g. opq64; default {DEFAULT_COMPRESSION})",
    )
    parser.add_argument("--embedder", help="SentenceTransformer folder for a dense first stage (faiss)")
    parser.add_argument("--shard-size", type=int, default=defaults.shard_size, help="documents per shard (1024)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="documents per forward pass (32)")
    parser.add_argument(
        "--codec-training-tokens",
        type=int,
        default=defaults.codec_training_tokens,
        help="token states sampled to train product quantisation (131072)",
    )
    parser.add_argument("--device", help="torch device (default: this process's GPU under accelerate, else CPU)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ranking_data.beir import BeirFormatError

    from .build import IndexBuildError, IndexConfig, build_index
    from .codecs import CodecError
    from .store import StoreError

    config = IndexConfig(
        model=args.model,
        data=args.data,
        output=args.output,
        compression=args.compression,
        embedder=args.embedder,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        codec_training_tokens=args.codec_training_tokens,
        device=args.device,
        show_progress=not args.no_progress,
    )
    try:
        info = build_index(config)
    except KeyboardInterrupt:
        print(
            f"interrupted: the shards committed so far are kept in {args.output}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except (BeirFormatError, IndexBuildError, StoreError, CodecError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if info is not None:
        summary = {key: info[key] for key in ("documents", "tokens", "compression", "bytes_per_token", "store_bytes")}
        print(f"index {args.output}: " + json.dumps(summary | {"build_seconds": info["build"]["seconds"]}))
    return 0
