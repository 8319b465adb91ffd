"""Serve a MICE or cross-encoder model over HTTP: TEI's ``/rerank``, Cohere/Jina ``/v1`` and ``/v2/rerank``,
``/health`` and Prometheus ``/metrics``, with bounded input (``serving.create_app``).

    mice serve --model mice-quickstart/models/mice                       # PyTorch, 127.0.0.1:8080
    mice serve --model mice-quickstart/models/mice --backend onnx-int8   # after mice export-onnx
"""

from __future__ import annotations

import argparse


# serving needs the `serve` extra (FastAPI, ONNX Runtime): imported when the verb runs, so that the `mice` command and
# this package import with the core dependencies alone.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from serving.cli import add_serve_arguments

    add_serve_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from serving.cli import run_serve

    return run_serve(args)
