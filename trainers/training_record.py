"""`training_record.json`: what a training run was, for the model card (layout in docs/design.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .batching import find_mice_model
from .losses import CombinedLoss, objective_config

TRAINING_RECORD = "training_record.json"

# The TrainingArguments a card reports; the rest are defaults or machinery.
RECORDED_HYPERPARAMETERS = (
    "max_steps",
    "num_train_epochs",
    "learning_rate",
    "head_learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "optim",
    "learning_rate_mapping",
)


def objectives_of(loss: nn.Module) -> list[dict[str, Any]]:
    """``[{"name", "weight", "config", "citation"}]`` for a loss or a ``CombinedLoss`` (the citation is the loss's
    BibTeX, which the model card cites: the losses hold their sources, the cards only read the record)."""
    parts = list(zip(loss.objectives, loss.weights, strict=True)) if isinstance(loss, CombinedLoss) else [(loss, 1.0)]
    return [
        {
            "name": type(objective).__name__,
            "weight": weight,
            "config": objective_config(objective),
            "citation": (getattr(objective, "citation", None) or "").strip() or None,
        }
        for objective, weight in parts
    ]


def build_training_record(
    model,
    loss: nn.Module,
    args,
    *,
    backbone: str,
    teacher: Mapping[str, Any],
    data: Mapping[str, Any],
    train_runtime_s: float | None = None,
    final_train_loss: float | None = None,
) -> dict[str, Any]:
    """The record of a run of ``DistillationTrainer`` on ``model`` (a CrossEncoder) with ``loss`` and ``args``."""
    mice = find_mice_model(model)
    record: dict[str, Any] = {"model_type": "mice" if mice is not None else "cross-encoder", "backbone": backbone}
    if mice is not None:
        config = mice.config
        depth = config.encoder_config.num_hidden_layers
        kept = config.fusion_layer + config.interaction_layers
        record |= {
            "fusion_layer": config.fusion_layer,
            "interaction_layers": config.interaction_layers,
            "dropped_layers": list(range(kept, depth)),
        }
    record["num_parameters"] = sum(p.numel() for p in model.parameters())
    record["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    record["objectives"] = objectives_of(loss)
    record["teacher"] = dict(teacher)
    record["data"] = dict(data)
    settings = args.to_dict()
    record["hyperparameters"] = {
        key: settings[key] for key in RECORDED_HYPERPARAMETERS if settings.get(key) not in (None, {})
    }
    record["train_runtime_s"] = train_runtime_s
    record["final_train_loss"] = final_train_loss
    return record


def write_training_record(folder: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``training_record.json`` into a model folder and return its path."""
    path = Path(folder) / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path
