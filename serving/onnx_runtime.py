"""ONNX Runtime engines for the graphs `onnx_export` writes: MICE (document encoder, query scorer) and cross-encoders.

An engine is the model half of a re-ranker (`serving.rerankers`): tensors in, tensors out. The same re-rankers run on
the PyTorch engines, so the ONNX path has the same `predict` / `rank` surface, passages and document cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .onnx_export import OnnxExportError, graph_file, read_manifest


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    if not path.is_file():
        raise OnnxExportError(f"{path} is missing: export the model with int8 copies (`mice export-onnx`)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


class OnnxMiceEngine:
    """MICE on ONNX Runtime: `encode` documents to states (or keys and values), `score` a query against them.

    `precision` is the query scorer's, `document_precision` the document encoder's (default: the same): an int8
    scorer on fp32 document states keeps the ranking where int8 states do not (docs/results.md, issue 22).
    """

    def __init__(
        self,
        folder: str | Path,
        precision: str = "fp32",
        key_values: bool = False,
        threads: int | None = None,
        document_precision: str | None = None,
    ):
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        if self.manifest["kind"] != "mice":
            raise OnnxExportError(f"{folder} holds a {self.manifest['kind']} export, not MICE")
        self.key_values = key_values
        suffix = "_key_values" if key_values else ""
        encoder = "document_key_values" if key_values else "document_encoder"
        self.encoder = _session(folder / graph_file(encoder, document_precision or precision), threads)
        self.scorer = _session(folder / graph_file("query_scorer" + suffix, precision), threads)
        self.max_query_length = self.manifest["max_query_length"]
        self.max_document_length = self.manifest["max_document_length"]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        outputs = self.encoder.run(None, {"input_ids": _numpy(input_ids), "attention_mask": _numpy(attention_mask)})
        return torch.from_numpy(outputs[0])

    def score(
        self,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
        documents: torch.Tensor,
        document_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        feed = {
            "query_input_ids": _numpy(query_input_ids),
            "query_attention_mask": _numpy(query_attention_mask),
            "documents": _numpy(documents.float()),
            "document_attention_mask": _numpy(document_attention_mask),
        }
        return torch.from_numpy(self.scorer.run(None, feed)[0])


class OnnxCrossEncoderEngine:
    """A cross-encoder on ONNX Runtime: `score` tokenized pairs (their first logit)."""

    def __init__(self, folder: str | Path, precision: str = "fp32", threads: int | None = None):
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        if self.manifest["kind"] != "cross-encoder":
            raise OnnxExportError(f"{folder} holds a {self.manifest['kind']} export, not a cross-encoder")
        self.session = _session(folder / graph_file("model", precision), threads)
        self.inputs = self.manifest["inputs"]
        self.max_length = self.manifest["max_length"]

    def score(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {name: _numpy(encoded[name]) for name in self.inputs})[0])
