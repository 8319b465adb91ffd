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
import time
from pathlib import Path

from evaluation.harness import EvaluationConfig, evaluate, write_json
from evaluation.report import plot_effectiveness, summary_table
from ranking_data.teacher_data import build_from_beir
from ranking_data.teachers import offline_teacher
from trainers import (
    TRAINING_RECORD,
    DistillationConfig,
    DistillationTrainingArguments,
    ModelConfig,
    TrainConfig,
    train,
)

OBJECTIVES = ("bce", "hinge", "margin_mse", "info_nce", "distill_ranknet", "adr_mse")
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


def train_config(
    kind: str, objective: str, teacher: Path, folder: Path, args: argparse.Namespace, backbone: str | None
) -> TrainConfig:
    """One run of the grid: ``kind`` ("cross-encoder" or "mice") trained with ``objective`` from ``backbone``."""
    return TrainConfig(
        model=ModelConfig(
            model_type=kind,
            backbone=backbone,
            fusion_layer=args.fusion_layer,
            interaction_layers=args.interaction_layers,
            max_query_length=32,
            max_document_length=args.max_document_length,
            max_length=32 + args.max_document_length,
        ),
        distillation=DistillationConfig(
            teacher_data=str(teacher),
            objectives=[objective],
            list_size=args.list_size,
            sampling="random",
            # Objectives trained on human labels need a labelled positive in every list.
            require_positive=objective in LABEL_OBJECTIVES,
        ),
        training=DistillationTrainingArguments(
            output_dir=str(folder),
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            head_learning_rate=args.head_learning_rate,
            warmup_steps=max(args.steps // 10, 1),
            bf16=args.bf16,
            seed=args.seed,
            data_seed=args.seed,
            save_steps=max(args.steps // 2, 1),
            save_total_limit=2,
            logging_steps=max(args.steps // 5, 1),
            report_to=[],
        ),
    )


def grid(teacher: Path, args: argparse.Namespace) -> list[tuple[str, TrainConfig]]:
    """A cross-encoder and a MICE per objective, as ``(ce:/mice: spec, config)``; each cross-encoder comes before the
    MICE of its objective, which ``--mice-from-cross-encoder`` starts from."""
    runs = []
    for objective in args.objectives:
        cross_encoder = args.output / "models" / f"cross-encoder-{objective}"
        mice = args.output / "models" / f"mice-{objective}"
        mice_start = str(cross_encoder) if args.mice_from_cross_encoder else args.backbone
        runs.append(
            (
                f"ce:{cross_encoder}",
                train_config("cross-encoder", objective, teacher, cross_encoder, args, args.backbone),
            )
        )
        runs.append((f"mice:{mice}", train_config("mice", objective, teacher, mice, args, mice_start)))
    return runs


def finished(config: TrainConfig) -> bool:
    """A run whose model was saved with its record: the grid keeps it."""
    return (Path(config.training.output_dir) / TRAINING_RECORD).is_file()


def train_grid(teacher: Path, args: argparse.Namespace) -> list[str]:
    """Train every unfinished run of the grid (an unfinished one resumes from its checkpoint); the models' specs."""
    runs = grid(teacher, args)
    for _, config in runs:
        if not finished(config):
            train(config)
    return [spec for spec, _ in runs]


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

    report = evaluate(
        EvaluationConfig(
            data=[str(args.data / name) for name in args.collections],
            models=["bm25", *models],
            split="test",
            depth=args.depth,
            max_queries=args.eval_queries,
            seed=args.seed,
        )
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
