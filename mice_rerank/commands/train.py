"""Distil a cross-encoder or a MICE model from a teacher-score dataset (``trainers.train``); resumable.

    mice train run.yaml
    mice train run.yaml --max_steps 100 --output_dir runs/short
    mice train --model_type mice --teacher_data teacher/ --objectives margin_mse info_nce:0.5 --output_dir runs/mice
    accelerate launch scripts/train.py run.yaml        # several processes: GPUs, or --cpu

The settings are the fields of ModelConfig, DistillationConfig and DistillationTrainingArguments (transformers'
TrainingArguments and the distillation trainer's own), by name: in a YAML or JSON file, flat, and as flags, which win
over the file. A run started again on the same output_dir resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mice_rerank.cli import add_dataclass_arguments, dataclass_values

ON_INTERRUPT = "interrupted: run the same command again to resume from the last checkpoint in output_dir"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trainers.config import DistillationConfig, DistillationTrainingArguments, ModelConfig

    parser.add_argument("config", nargs="?", type=Path, help="YAML or JSON file of settings (flags override it)")
    add_dataclass_arguments(parser, ModelConfig, "model")
    add_dataclass_arguments(parser, DistillationConfig, "distillation")
    add_dataclass_arguments(parser, DistillationTrainingArguments, "training")


def run(args: argparse.Namespace) -> int:
    from trainers import TrainConfig, train
    from trainers.config import SECTIONS

    settings = dataclass_values(args, *SECTIONS)
    config = TrainConfig.from_file(args.config, **settings) if args.config else TrainConfig.from_dict(settings)
    result = train(config)
    if result.record is not None:
        summary = {"output_dir": str(result.output_dir), "resumed_from": result.resumed_from}
        summary |= {"final_train_loss": result.record["final_train_loss"], "dev_after": result.dev_after}
        print(json.dumps(summary, default=str))
    return 0
