"""The papers' comparison on the offline collections: objectives x {cross-encoder, MICE}, same backbone, same teacher.

Training: each objective on a cross-encoder and on MICE, on ``debian-known-item`` train queries scored by the
offline teacher (BM25 + all-MiniLM-L6-v2, per-query min-max ensemble). Evaluation: in-domain on
``debian-known-item`` test, out-of-domain on scifact, cranfield, cisi, vaswani and cacm, re-ranking BM25.
Output: ``evaluation.json``, a markdown table (nDCG@10 with significance markers) and a plot, under ``--output``.
Every finished training run and the teacher dataset are kept, so an interrupted grid resumes where it stopped.
MICE starts from the backbone, like the cross-encoder and as in the paper, or with ``--mice-from-cross-encoder`` from
the cross-encoder just trained with the same objective (a warm start).

    python scripts/experiments.py --data ../shared/data --output runs/experiments
    python scripts/experiments.py --data ../shared/data --output runs/experiments-gpu --bf16 --steps 120 ...  # GPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evaluation.harness import evaluate_systems, write_json
from evaluation.report import plot_effectiveness, summary_table
from trainers.teacher_data import build_from_beir
from trainers.teachers import offline_teacher
from trainers.train_cli import main as train_main

OBJECTIVES = ("bce", "hinge", "margin_mse", "info_nce", "distill_ranknet", "adr_mse")
# Objectives trained on human labels need a labelled positive in every list.
LABEL_OBJECTIVES = {"bce", "hinge", "info_nce"}
IN_DOMAIN = "debian-known-item"
OUT_OF_DOMAIN = ("scifact", "cranfield", "cisi", "vaswani", "cacm")


def build_teacher(data: Path, output: Path, args: argparse.Namespace) -> Path:
    folder = output / "teacher" / "train"
    if not (folder / "dataset_dict.json").is_file():
        build_from_beir(
            data / IN_DOMAIN,
            folder,
            split="train",
            depth=args.candidates,
            max_queries=args.train_queries,
            seed=args.seed,
            teacher=lambda retriever: offline_teacher(retriever, max_seq_length=args.teacher_max_length),
        )
    return folder


def train_run(
    kind: str, objective: str, teacher: Path, folder: Path, args: argparse.Namespace, backbone: str | None
) -> dict:
    if (folder / "training_record.json").is_file():
        return json.loads((folder / "training_record.json").read_text(encoding="utf-8"))
    argv = [
        "--model-type", kind,
        "--teacher-data", str(teacher),
        "--objective", objective,
        "--list-size", str(args.list_size),
        "--sampling", "random",
        "--batch-size", str(args.batch_size),
        "--max-steps", str(args.steps),
        "--learning-rate", str(args.learning_rate),
        "--head-learning-rate", str(args.head_learning_rate),
        "--warmup-steps", str(max(args.steps // 10, 1)),
        "--max-query-length", "32",
        "--max-document-length", str(args.max_document_length),
        "--max-length", str(32 + args.max_document_length),
        "--fusion-layer", str(args.fusion_layer),
        "--interaction-layers", str(args.interaction_layers),
        "--save-steps", str(max(args.steps // 2, 1)),
        "--logging-steps", str(max(args.steps // 5, 1)),
        "--seed", str(args.seed),
        "--output-dir", str(folder),
    ]  # fmt: skip
    if objective in LABEL_OBJECTIVES:
        argv.append("--require-positive")
    if backbone:
        argv += ["--backbone", backbone]
    if args.bf16:
        argv.append("--bf16")
    return train_main(argv)


def train_grid(teacher: Path, args: argparse.Namespace) -> list[str]:
    """Train a cross-encoder and a MICE per objective (finished runs are kept); their ``ce:``/``mice:`` specs."""
    models = []
    for objective in args.objectives:
        cross_encoder = args.output / "models" / f"cross-encoder-{objective}"
        train_run("cross-encoder", objective, teacher, cross_encoder, args, args.backbone)
        mice = args.output / "models" / f"mice-{objective}"
        mice_start = str(cross_encoder) if args.mice_from_cross_encoder else args.backbone
        train_run("mice", objective, teacher, mice, args, mice_start)
        models += [f"ce:{cross_encoder}", f"mice:{mice}"]
    return models


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding the BEIR collections")
    parser.add_argument("--output", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--backbone", help="default: the packaged all-MiniLM-L6-v2")
    # ℓ2+2 nearly doubles ℓ3+2 on MiniLM-L6 with every score-distillation objective (docs/results.md, session 7).
    parser.add_argument("--fusion-layer", type=int, default=2)
    parser.add_argument("--interaction-layers", type=int, default=2)
    parser.add_argument("--train-queries", type=int, default=800)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--teacher-max-length", type=int, default=128, help="bi-encoder teacher tokens per text")
    parser.add_argument("--list-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--head-learning-rate", type=float, default=1e-3, help="the new classification head's")
    parser.add_argument("--max-document-length", type=int, default=128)
    parser.add_argument("--eval-queries", type=int, default=100, help="queries sampled per test collection")
    parser.add_argument("--depth", type=int, default=30, help="BM25 candidates re-ranked per query")
    parser.add_argument("--collections", nargs="+", default=[IN_DOMAIN, *OUT_OF_DOMAIN])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--bf16", action="store_true", help="train in bfloat16 mixed precision (GPU)")
    parser.add_argument(
        "--mice-from-cross-encoder",
        action="store_true",
        help="start each MICE from the cross-encoder trained with the same objective (a warm start), not from the "
        "backbone as the paper does",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    teacher = build_teacher(args.data, args.output, args)
    models = train_grid(teacher, args)
    trained = time.perf_counter()

    report = evaluate_systems(
        [args.data / name for name in args.collections],
        ["bm25", *models],
        split="test",
        depth=args.depth,
        max_queries=args.eval_queries,
        seed=args.seed,
    )
    report["settings"]["experiment"] = {**vars(args), "data": str(args.data), "output": str(args.output)}
    report["settings"]["experiment"]["seconds"] = {
        "training": trained - started,
        "total": time.perf_counter() - started,
    }
    write_json(report, args.output / "evaluation.json")
    plot_effectiveness(report, args.output / "ndcg10.png")
    (args.output / "table.md").write_text(summary_table(report) + "\n", encoding="utf-8")
    print(summary_table(report))


if __name__ == "__main__":
    main()
