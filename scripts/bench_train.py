"""Training throughput of MICE against a cross-encoder on the same backbone, same objective, same lists, next to the
ratio of the FLOPs that their training steps execute.

Both models are built by ``trainers.build_model`` and train through ``DistillationTrainer`` as ``trainers.train`` runs
it: the collator tokenizes a batch (MICE: separate query and document inputs; the cross-encoder: joint pairs), then a
step scores it once (``compute_loss``), back-propagates and takes an AdamW step. Every layer is trained (no frozen
layers, no document cache). Batches are real Debian queries and documents from the packaged sample, the same for
both models; steps alternate between the models so that both see the same machine load, and after warm-up steps the
medians are reported. The FLOPs of one step (forward and backward, matrix products as
``torch.utils.flop_counter.FlopCounterMode`` counts them, with eager attention so that attention is counted too) give
``flop_ratio``; ``speedup_vs_flop_ratio`` says how much of that ratio the measured speed-up realises. Prints one JSON
object (``--json PATH`` also writes it)::

    python scripts/bench_train.py --config minilm-l12 --fusion-layer 4 --interaction-layers 3   # the paper's shape
    python scripts/bench_train.py --device cuda --bf16 --batch-size 32 --steps 20

A single measurement on whatever machine runs it, not a test: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate.utils import send_to_device
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's shapes and backbone builder
from bench_latency import CONFIGS, build_backbone, default_backbone  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "mice_rerank" / "sample_data" / "debian"
MODELS = ("cross-encoder", "mice")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--backbone", help="encoder or cross-encoder folder (default: the packaged all-MiniLM-L6-v2)")
    source.add_argument("--config", choices=sorted(CONFIGS), help="random weights of a named shape instead")
    parser.add_argument("--fusion-layer", type=int, default=4)
    parser.add_argument("--interaction-layers", type=int, default=3)
    parser.add_argument("--objective", default="margin_mse", help="an objective of trainers.losses (name or alias)")
    parser.add_argument("--list-size", type=int, default=8, help="documents per query")
    parser.add_argument("--batch-size", type=int, default=4, help="queries per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--max-query-length", type=int, default=32)
    parser.add_argument("--max-document-length", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if not args.config and not args.backbone:
        args.backbone = default_backbone()
    return args


def sample_batches(args: argparse.Namespace) -> list[list[dict]]:
    """Listwise rows from the packaged sample: each judged query with its relevant and random other documents."""
    from ranking_data.beir import load_beir

    beir = load_beir(SAMPLE, "train")
    generator = random.Random(args.seed)
    doc_ids = sorted(beir.corpus)
    query_ids = sorted(beir.qrels)
    generator.shuffle(query_ids)
    rows = []
    for query_id in query_ids[: args.batch_size * (args.steps + args.warmup_steps)]:
        relevant = list(beir.qrels[query_id])[:1]
        others = generator.sample(doc_ids, args.list_size - len(relevant))
        documents = [beir.document_text(d) for d in relevant + others]
        scores = [generator.gauss(0.0, 2.0) for _ in documents]
        rows.append({"query": beir.queries[query_id], "documents": documents, "scores": scores})
    return [rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)]


def build_trainers(args: argparse.Namespace, backbone: str, output_dir: str, batches: list[list[dict]]) -> dict:
    """Each model with its DistillationTrainer (collator, loss) and its optimizer, as trainers.train would build them."""
    from datasets import Dataset

    from trainers import DistillationTrainer, DistillationTrainingArguments, ModelConfig, build_loss, build_model

    lengths = {"max_query_length": args.max_query_length, "max_document_length": args.max_document_length}
    configs = {
        "cross-encoder": ModelConfig("cross-encoder", backbone, max_length=sum(lengths.values())),
        "mice": ModelConfig("mice", backbone, args.fusion_layer, args.interaction_layers, **lengths),
    }
    rows = Dataset.from_list([row for batch in batches for row in batch])
    setups = {}
    for name, config in configs.items():
        model = build_model(config).to(args.device)
        arguments = DistillationTrainingArguments(
            output_dir=output_dir, report_to="none", use_cpu=args.device == "cpu", learning_rate=1e-5
        )
        trainer = DistillationTrainer(
            model=model, args=arguments, train_dataset=rows, loss=build_loss(model, [args.objective])
        )
        model.train()
        setups[name] = (trainer, model, trainer.create_optimizer())
    return setups


def synchronize(args: argparse.Namespace) -> None:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def collate(trainer, rows: list[dict], args: argparse.Namespace) -> tuple[dict, float]:
    """The collator's batch (tokenized, on the device) and its wall time: what DataLoader workers can take over."""
    start = time.perf_counter()
    batch = send_to_device(trainer.data_collator(rows), args.device)
    return batch, time.perf_counter() - start


def training_step(trainer, model, optimizer, batch: dict, args: argparse.Namespace) -> float:
    """One optimisation step on a collated batch; its wall time in seconds."""
    synchronize(args)
    start = time.perf_counter()
    with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
        loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(args)
    return time.perf_counter() - start


def step_flops(trainer, model, batch: dict) -> int:
    """Matrix-product FLOPs of one forward and backward pass, attention included (eager attention)."""
    inner = model[0].model
    implementation = inner.config._attn_implementation
    inner.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False) as counter:
            trainer.compute_loss(model, dict(batch)).backward()
    finally:
        inner.set_attn_implementation(implementation)
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def padding_share(batch: dict) -> float:
    """The share of the tokenized positions that are padding."""
    masks = [value for key, value in _tensors(batch["model_inputs"]) if key.endswith("attention_mask")]
    return round(1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks), 3)


def _tensors(tree, key: str = ""):
    if isinstance(tree, torch.Tensor):
        yield key, tree
    elif isinstance(tree, Mapping):
        for name, value in tree.items():
            yield from _tensors(value, name)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _tensors(value, key)


def measure(setups: dict, batches: list[list[dict]], args: argparse.Namespace) -> dict:
    """Median step and collation times, step FLOPs and padding of each model, steps interleaved."""
    timings = {name: {"step": [], "collate": []} for name in setups}
    flops, padding = {}, {}
    for index, rows in enumerate(batches):
        for name, (trainer, model, optimizer) in setups.items():
            batch, collate_seconds = collate(trainer, rows, args)
            if index == 0:
                flops[name] = step_flops(trainer, model, batch)
                padding[name] = padding_share(batch)
            seconds = training_step(trainer, model, optimizer, batch, args)
            if index >= args.warmup_steps:
                timings[name]["step"].append(seconds)
                timings[name]["collate"].append(collate_seconds)
    results = {}
    for name, (_, model, _) in setups.items():
        step = statistics.median(timings[name]["step"])
        results[name] = {
            "seconds_per_step": round(step, 4),
            "collate_seconds": round(statistics.median(timings[name]["collate"]), 4),
            "queries_per_second": round(args.batch_size / step, 2),
            "pairs_per_second": round(args.batch_size * args.list_size / step, 2),
            "step_gflop": round(flops[name] / 1e9, 2),
            "achieved_gflops": round(flops[name] / step / 1e9, 1),
            "padding_share": padding[name],
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
    return results


def main(argv: list[str] | None = None) -> dict:
    from transformers.utils import logging as transformers_logging

    args = parse_args(argv)
    transformers_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()[0]
    batches = sample_batches(args)
    with tempfile.TemporaryDirectory() as folder:
        backbone_name, _ = build_backbone(args, Path(folder) / "backbone")
        setups = build_trainers(args, str(Path(folder) / "backbone"), folder, batches)
        results = measure(setups, batches, args)
    ce, mice = results["cross-encoder"], results["mice"]
    speedup = ce["seconds_per_step"] / mice["seconds_per_step"]
    flop_ratio = ce["step_gflop"] / mice["step_gflop"]
    with_collation = (ce["seconds_per_step"] + ce["collate_seconds"]) / (
        mice["seconds_per_step"] + mice["collate_seconds"]
    )
    report = {
        "backbone": backbone_name,
        "mice_architecture": f"MICE-l{args.fusion_layer}+{args.interaction_layers}",
        "trained_layers": "all",
        "objective": args.objective,
        "list_size": args.list_size,
        "queries_per_step": args.batch_size,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "max_query_length": args.max_query_length,
        "max_document_length": args.max_document_length,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "bf16": args.bf16,
        **results,
        # From the step times: the rounded rates above lose precision on slow machines.
        "mice_speedup": round(speedup, 3),
        "mice_speedup_with_collation": round(with_collation, 3),
        "flop_ratio": round(flop_ratio, 3),
        "speedup_vs_flop_ratio": round(speedup / flop_ratio, 3),
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    line = json.dumps(report, indent=2)
    print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
