"""The `mice serve` and `mice export-onnx` verbs: thin layers over `serving.create_app` and `serving.export_onnx`."""

from __future__ import annotations

import argparse
import sys

from modeling_mice import LongDocuments

from .app import ServerSettings
from .rerankers import BACKENDS


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a MICE or cross-encoder model folder")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="PyTorch, or ONNX Runtime fp32/int8 from MODEL/onnx (mice export-onnx writes it); onnx-int8-query: MICE "
        "documents encoded in fp32 and queries scored in int8 (int8 document states cost ranking quality)",
    )
    parser.add_argument("--key-values", action="store_true", help="MICE: cache documents as interaction keys/values")
    parser.add_argument("--cache-documents", type=int, default=10_000, help="MICE document cache size (0: off)")
    parser.add_argument("--long-documents", help="maxp, firstp or sumtop:K: score long documents by passages")
    parser.add_argument("--stride", type=int, help="tokens between passage starts (default: half a passage)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents (or passages) per forward pass")
    parser.add_argument("--max-documents", type=int, default=ServerSettings.max_documents)
    parser.add_argument("--max-text-chars", type=int, default=ServerSettings.max_text_chars)
    parser.add_argument("--max-request-bytes", type=int, default=ServerSettings.max_request_bytes)
    parser.add_argument("--threads", type=int, help="CPU threads of the model (default: the library's)")


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .onnx_export import OnnxExportError
    from .rerankers import load_reranker

    try:
        long_documents = LongDocuments.parse(args.long_documents, args.stride) if args.long_documents else None
        reranker = load_reranker(
            args.model,
            args.backend,
            batch_size=args.batch_size,
            long_documents=long_documents,
            key_values=args.key_values,
            cache_documents=args.cache_documents,
            threads=args.threads,
        )
    except (OnnxExportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = ServerSettings(
        model_name=str(args.model),
        max_documents=args.max_documents,
        max_text_chars=args.max_text_chars,
        max_request_bytes=args.max_request_bytes,
    )
    uvicorn.run(create_app(reranker, settings), host=args.host, port=args.port, log_level="warning")
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a MICE or cross-encoder model folder")
    parser.add_argument("--output", help="where to write the graphs (default: MODEL/onnx)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 copies")
    parser.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (slower) instead of tracing")


def run_export(args: argparse.Namespace) -> int:
    from .onnx_export import OnnxExportError, export_onnx

    try:
        output = export_onnx(args.model, args.output, int8=not args.no_int8, dynamo=args.dynamo)
    except (OnnxExportError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0
