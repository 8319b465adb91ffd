"""Export MICE and plain cross-encoders to ONNX Runtime graphs, fp32 and int8, in an `onnx/` folder next to the weights.

MICE becomes four graphs (all with dynamic batch and length axes):

- `document_encoder`: `input_ids, attention_mask (N, Ld)` -> `document_states (N, Ld, H)`;
- `document_key_values`: the same inputs -> `document_key_values (N, Ld, 2 * interaction_layers * H)`;
- `query_scorer`: `query_input_ids, query_attention_mask (1, Lq), documents (N, Ld, H), document_attention_mask`
  -> `scores (N,)`;
- `query_scorer_key_values`: the same with `documents` the keys and values.

A cross-encoder becomes one graph `model`: `input_ids, attention_mask[, token_type_ids] (P, L)` -> `scores (P,)` (its
first logit). int8 copies (`*.int8.onnx`) are `onnxruntime.quantization.quantize_dynamic` with per-channel int8
weights on the matrix products that run once per document; a query scorer's products that read no document input
(the query's lower layers and first self-attention, run once per query) stay fp32. `export.json` describes the folder
(kind, graphs, inputs, the model's lengths, versions). The traced forwards are `modeling_mice.MiceDocumentEncoder` / `MiceQueryScorer` (no data-dependent shapes), exported with
`torch.onnx.export`'s TorchScript tracer by default (seconds, where the dynamo exporter takes minutes per graph on a
CPU; `dynamo=True` uses it instead).
"""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path

import onnx
import torch

from evaluation.rerankers import detect_model_kind
from modeling_mice import MiceDocumentEncoder, MiceForSequenceClassification, MiceQueryScorer

FORMAT = "mice-rerank-onnx/1"
MANIFEST = "export.json"
OPSET = 17
PRECISIONS = ("fp32", "int8")


class OnnxExportError(ValueError):
    """A model folder that cannot be exported, or an `onnx/` folder that cannot be read."""


def graph_file(name: str, precision: str) -> str:
    """File name of graph `name` at `precision` inside the `onnx/` folder."""
    if precision not in PRECISIONS:
        raise OnnxExportError(f"precision {precision!r} is not one of {PRECISIONS}")
    return f"{name}.onnx" if precision == "fp32" else f"{name}.int8.onnx"


def model_kind(folder: str | Path) -> str:
    """`"mice"` or `"cross-encoder"`, from the folder's `config.json`; a local folder only (no Hub ids: exporting and
    serving read its files)."""
    if not (Path(folder) / "config.json").is_file():
        raise OnnxExportError(f"{folder} holds no config.json: pass a model folder saved with save_pretrained")
    return detect_model_kind(folder)


def _export(module: torch.nn.Module, args: tuple, names: list[str], axes: dict, path: Path, dynamo: bool) -> None:
    """`axes` names the dynamic axes of every input and of the one output (the key that is not an input)."""
    output = [name for name in axes if name not in names]
    module.eval()  # the exporter gives the module its mode back afterwards: a wrapper in training mode would leave the
    # wrapped model there too, dropout and all
    with torch.no_grad():
        if dynamo:
            shapes = {name: {axis: torch.export.Dim.DYNAMIC for axis in axes[name]} for name in names}
            torch.onnx.export(
                module, args, path, input_names=names, output_names=output, dynamic_shapes=shapes, dynamo=True
            )
        else:
            torch.onnx.export(
                module,
                args,
                path,
                input_names=names,
                output_names=output,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )


def independent_products(graph: onnx.GraphProto, inputs: set[str]) -> list[str]:
    """Names of the MatMul/Gemm nodes of `graph` that read none of `inputs`, directly or through other nodes."""
    reached = set(inputs)
    independent = []
    for node in graph.node:  # ONNX keeps nodes in topological order
        if reached.intersection(node.input):
            reached.update(node.output)
        elif node.op_type in ("MatMul", "Gemm"):
            independent.append(node.name)
    return independent


def quantize_int8(source: Path, target: Path, per_document_inputs: set[str]) -> None:
    """Dynamic int8 quantisation of the MatMul/Gemm weights (per output channel) of the products that read any of
    `per_document_inputs`, activations quantised at run time; the others stay fp32.

    In a MICE query scorer those others are the query's lower layers and first self-attention, run once per query:
    keeping them fp32 took int8 MICE's loss on debian-known-item from 0.0059 to 0.0046 nDCG@10 (fp32 document states;
    0.0063 to 0.0034 on cached keys and values), with no speed change beyond the run-to-run spread (docs/results.md,
    issue 22). In a graph whose every input is per document, every product is quantised.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = independent_products(onnx.load(source).graph, per_document_inputs)
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=excluded)


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _write_graphs(model, graphs: dict, folder: Path, int8: bool, dynamo: bool) -> dict[str, dict[str, str]]:
    """Export each `{name: (module, args, input names, axes, per-document input names)}` to `folder` (and its int8
    copy, quantised where it reads a per-document input).

    `model` is traced with eager attention (plain MatMul/Softmax, which ONNX Runtime fuses and quantises; the sdpa
    path holds mask shortcuts decided at trace time) and given its own implementation back afterwards.
    """
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    files = {}
    try:
        for name, (module, args, names, axes, per_document) in graphs.items():
            fp32 = folder / graph_file(name, "fp32")
            _export(module, args, names, axes, fp32, dynamo)
            files[name] = {"fp32": fp32.name}
            if int8:
                quantize_int8(fp32, folder / graph_file(name, "int8"), set(per_document))
                files[name]["int8"] = graph_file(name, "int8")
    finally:
        model.set_attn_implementation(implementation)
    return files


def _sample_texts() -> tuple[str, list[str]]:
    """A query and two documents of different lengths: traced shapes must not coincide, or the tracer may tie them."""
    return "what does a cat eat", ["a cat eats fish and mice", "dogs bark at night when they hear a noise outside"]


def export_mice(
    model: MiceForSequenceClassification,
    tokenizer,
    folder: str | Path,
    int8: bool = True,
    key_values: bool = True,
    dynamo: bool = False,
) -> dict:
    """Export a MICE model's graphs (and their int8 copies) to `folder`; returns the manifest. `key_values=False`
    leaves out the two key/value graphs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    query_text, document_texts = _sample_texts()
    query = model.tokenize_queries(tokenizer, [query_text])
    documents = model.tokenize_documents(tokenizer, document_texts)
    with torch.no_grad():
        states = model.encode_documents(**documents)
        key_values = model.document_key_values(states)
    document_args = (documents["document_input_ids"], documents["document_attention_mask"])
    document_names = ["input_ids", "attention_mask"]
    document_axes = {name: {0: "documents", 1: "document_length"} for name in document_names}
    document_inputs = ["documents", "document_attention_mask"]  # the query scorer's per-document inputs
    scorer_names = ["query_input_ids", "query_attention_mask", *document_inputs]
    scorer_axes = {
        "query_input_ids": {1: "query_length"},
        "query_attention_mask": {1: "query_length"},
        "documents": {0: "documents", 1: "document_length"},
        "document_attention_mask": {0: "documents", 1: "document_length"},
        "scores": {0: "documents"},
    }
    query_args = (query["query_input_ids"], query["query_attention_mask"])
    graphs = {
        "document_encoder": (
            MiceDocumentEncoder(model),
            document_args,
            document_names,
            document_axes | {"document_states": {0: "documents", 1: "document_length"}},
            document_names,
        ),
        "document_key_values": (
            MiceDocumentEncoder(model, key_values=True),
            document_args,
            document_names,
            document_axes | {"document_key_values": {0: "documents", 1: "document_length"}},
            document_names,
        ),
        "query_scorer": (
            MiceQueryScorer(model),
            (*query_args, states.hidden_states, states.attention_mask),
            scorer_names,
            scorer_axes,
            document_inputs,
        ),
        "query_scorer_key_values": (
            MiceQueryScorer(model, key_values=True),
            (*query_args, key_values.key_values, key_values.attention_mask),
            scorer_names,
            scorer_axes,
            document_inputs,
        ),
    }
    if not key_values:
        graphs = {name: graph for name, graph in graphs.items() if "key_values" not in name}
    config = model.config
    manifest = {
        "format": FORMAT,
        "kind": "mice",
        "graphs": _write_graphs(model, graphs, folder, int8, dynamo),
        "hidden_size": config.encoder_config.hidden_size,
        "interaction_layers": config.interaction_layers,
        "max_query_length": config.max_query_length,
        "max_document_length": config.max_document_length,
        "exporter": "dynamo" if dynamo else "torchscript",
        "opset": OPSET,
        "versions": _versions(),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


class _FirstLogit(torch.nn.Module):
    """A sequence-classification model's first logit: the cross-encoder's score."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits[:, 0]


def export_cross_encoder(model, tokenizer, folder: str | Path, int8: bool = True, dynamo: bool = False) -> dict:
    """Export a cross-encoder (`AutoModelForSequenceClassification`) to `folder/model.onnx` (and its int8 copy)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    query_text, document_texts = _sample_texts()
    encoded = tokenizer([query_text] * len(document_texts), document_texts, padding=True, return_tensors="pt")
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded]
    axes = {name: {0: "pairs", 1: "length"} for name in names} | {"scores": {0: "pairs"}}
    graphs = {"model": (_FirstLogit(model), tuple(encoded[name] for name in names), names, axes, names)}
    manifest = {
        "format": FORMAT,
        "kind": "cross-encoder",
        "graphs": _write_graphs(model, graphs, folder, int8, dynamo),
        "inputs": names,
        "max_length": min(tokenizer.model_max_length, model.config.max_position_embeddings),
        "exporter": "dynamo" if dynamo else "torchscript",
        "opset": OPSET,
        "versions": _versions(),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def export_onnx(model_folder: str | Path, output: str | Path | None = None, int8: bool = True, dynamo: bool = False):
    """Export the model saved in `model_folder` (MICE or cross-encoder) to `output` (default `model_folder/onnx`).

    The folder is written to a temporary sibling and renamed when complete, so an interrupted export never leaves
    a half folder that a runtime would load. Returns the output folder.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import modeling_mice  # noqa: F401  (registers MICE with the Auto classes)

    model_folder = Path(model_folder)
    kind = model_kind(model_folder)
    output = Path(output) if output is not None else model_folder / "onnx"
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    if kind == "mice":
        model = MiceForSequenceClassification.from_pretrained(model_folder, attn_implementation="eager")
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_folder, attn_implementation="eager")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}-") as temporary:
        exporter = export_mice if kind == "mice" else export_cross_encoder
        exporter(model, tokenizer, temporary, int8=int8, dynamo=dynamo)
        if output.exists():
            for old in output.iterdir():
                old.unlink()
            output.rmdir()
        Path(temporary).rename(output)
        Path(temporary).mkdir()  # TemporaryDirectory removes what is left at its path
    return output


def read_manifest(folder: str | Path) -> dict:
    """The `export.json` of an `onnx/` folder, checked."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise OnnxExportError(
            f"{folder} has no {MANIFEST}: export the model first (`mice export-onnx --model MODEL_FOLDER`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise OnnxExportError(f"{path} is not valid JSON ({error.msg}); export the model again") from error
    if manifest.get("format") != FORMAT:
        raise OnnxExportError(f"{path} is not a {FORMAT} manifest (format {manifest.get('format')!r})")
    return manifest
