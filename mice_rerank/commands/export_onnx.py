"""Export a MICE or cross-encoder model to ONNX (fp32 and int8) for ONNX Runtime (``serving.export_onnx``).

mice export-onnx --model mice-quickstart/models/mice          # writes mice-quickstart/models/mice/onnx/
"""

from __future__ import annotations

import argparse


# serving needs the `serve` extra (FastAPI, ONNX Runtime): imported when the verb runs, so that the `mice` command and
# this package import with the core dependencies alone.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from serving.cli import add_export_arguments

    add_export_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from serving.cli import run_export

    return run_export(args)
