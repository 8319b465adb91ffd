"""Serve a MICE or cross-encoder model over HTTP: TEI's ``/rerank``, Cohere/Jina ``/v1`` and ``/v2/rerank``,
``/health`` and Prometheus ``/metrics``, with bounded input (``serving.create_app``).

    mice serve --model mice-quickstart/models/mice                       # PyTorch, 127.0.0.1:8080
    mice serve --model mice-quickstart/models/mice --backend onnx-int8   # after mice export-onnx
"""

from serving.cli import add_serve_arguments as add_arguments
from serving.cli import run_serve as run

__all__ = ["add_arguments", "run"]
