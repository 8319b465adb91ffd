"""Export a MICE or cross-encoder model to ONNX (fp32 and int8) for ONNX Runtime (``serving.export_onnx``).

mice export-onnx --model mice-quickstart/models/mice          # writes mice-quickstart/models/mice/onnx/
"""

from serving.cli import add_export_arguments as add_arguments
from serving.cli import run_export as run

__all__ = ["add_arguments", "run"]
