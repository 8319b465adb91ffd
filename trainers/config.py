"""What a training run is, as data: three dataclasses of typed fields with help, in transformers' style.

- :class:`ModelConfig`: the student, a cross-encoder or a MICE model built from a backbone;
- :class:`DistillationConfig`: the teacher-score dataset, the lists drawn from it, the objectives, the dev evaluation;
- :class:`~trainers.trainer.DistillationTrainingArguments`: transformers' ``TrainingArguments`` (``output_dir``,
  ``max_steps``, ``learning_rate``, ``per_device_train_batch_size``, ...) plus the distillation trainer's own.

:class:`TrainConfig` holds one of each. A file or a dict gives any field of the three by its name, flat, as
``HfArgumentParser`` reads them (``mice train run.yaml`` and ``scripts/train.py`` parse the same fields as flags)::

    model_type: mice
    fusion_layer: 4
    interaction_layers: 3
    teacher_data: teacher_dataset/
    objectives: [margin_mse, {name: info_nce, weight: 0.5, scale: 5.0}]
    output_dir: runs/mice
    max_steps: 1000
    learning_rate: 7e-6

    config = TrainConfig.from_file("run.yaml", max_steps=10)   # keyword arguments override the file
    result = trainers.train(config)
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .trainer import DistillationTrainingArguments


class ConfigError(ValueError):
    """A training configuration that cannot run: an unknown or missing setting, a value of the wrong type."""


@dataclass
class ModelConfig:
    """The student: a cross-encoder (the backbone with a one-label head) or MICE built from the backbone."""

    model_type: Literal["cross-encoder", "mice"] = field(default="cross-encoder", metadata={"help": "What to train."})
    backbone: str | None = field(
        default=None,
        metadata={"help": "Encoder or cross-encoder folder or Hub id (default: the packaged all-MiniLM-L6-v2)."},
    )
    fusion_layer: int = field(default=4, metadata={"help": "MICE: the first interaction layer (0-based)."})
    interaction_layers: int = field(default=3, metadata={"help": "MICE: how many interaction layers."})
    max_query_length: int | None = field(
        default=None, metadata={"help": "MICE: query tokens kept (default: the encoder's maximum)."}
    )
    max_document_length: int | None = field(default=None, metadata={"help": "MICE: document tokens kept."})
    max_length: int | None = field(default=None, metadata={"help": "Cross-encoder: pair tokens kept."})
    pooling: Literal["cls", "mean"] | None = field(
        default=None, metadata={"help": "MICE: pool the query's [CLS] (default) or the mean of its tokens."}
    )
    cls_reads_document: bool = field(
        default=False,
        metadata={"help": "MICE: let the query [CLS] cross-attend to the document (the paper's ablation)."},
    )
    freeze_independent_layers: bool = field(
        default=False,
        metadata={"help": "MICE: train only the interaction layers and the head; each document is encoded once."},
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Every dropout probability of the backbone (e.g. 0 for short runs; default: its own)."},
    )

    def __post_init__(self) -> None:
        if self.freeze_independent_layers and self.model_type != "mice":
            raise ConfigError(
                "freeze_independent_layers is for MICE (model_type: mice): a cross-encoder has no independent layers"
            )
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DistillationConfig:
    """What the student learns from: teacher-score lists, the objectives applied to them, the dev evaluation."""

    teacher_data: str | None = field(
        default=None, metadata={"help": "Teacher dataset folder (train/, queries/, documents/). Required."}
    )
    eval_teacher_data: str | None = field(
        default=None, metadata={"help": "Teacher dataset folder of dev queries, for the dev loss."}
    )
    teacher_name: str | None = field(
        default=None, metadata={"help": "Recorded in training_record.json (default: the dataset's own)."}
    )
    objectives: list[str] = field(
        default_factory=lambda: ["margin_mse"],
        metadata={
            "help": "NAME or NAME:WEIGHT, a class of trainers.losses or a short name (margin_mse, info_nce, ...); "
            'an entry may also be a mapping (a JSON object on the command line): {"name", "weight", arguments}.'
        },
    )
    list_size: int = field(default=8, metadata={"help": "Documents per query in a training list."})
    sampling: Literal["top", "random"] = field(default="top", metadata={"help": "Which documents fill a list."})
    require_positive: bool = field(default=False, metadata={"help": "Every list keeps a labelled positive."})
    dev_beir: str | None = field(
        default=None, metadata={"help": "BEIR folder: report dev MRR@10 / nDCG@10 re-ranking BM25's candidates."}
    )
    dev_split: str = field(default="dev", metadata={"help": "The qrels split of dev_beir."})
    dev_queries: int = field(default=200, metadata={"help": "At most this many dev queries."})
    dev_depth: int = field(default=30, metadata={"help": "BM25 candidates re-ranked per dev query."})

    def __post_init__(self) -> None:
        self.objectives = [json.loads(o) if isinstance(o, str) and o.startswith("{") else o for o in self.objectives]


SECTIONS = (ModelConfig, DistillationConfig, DistillationTrainingArguments)


@dataclass
class TrainConfig:
    """A whole training run: the student, what it is distilled from, and the trainer's arguments."""

    training: DistillationTrainingArguments
    model: ModelConfig = field(default_factory=ModelConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)

    def __post_init__(self) -> None:
        if not self.distillation.teacher_data:
            raise ConfigError("teacher_data is required: a teacher dataset folder (see ranking_data.teacher_data)")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from flat settings: any field of :class:`ModelConfig`, :class:`DistillationConfig` and
        :class:`~trainers.trainer.DistillationTrainingArguments` by name. Numbers given as strings (YAML reads
        ``1e-5`` as one) are converted to the field's type."""
        values = dict(values)
        known = {f.name: section for section in SECTIONS for f in dataclasses.fields(section) if f.init}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are the fields of {_section_names()}")
        if not values.get("output_dir"):
            raise ConfigError("output_dir is required: the folder for checkpoints and the trained model")
        sections = {section: {} for section in SECTIONS}
        for name, value in values.items():
            sections[known[name]][name] = _coerce(known[name], name, value)
        model, distillation, training = (section(**sections[section]) for section in SECTIONS)
        return cls(training=training, model=model, distillation=distillation)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML or JSON file of flat settings; ``overrides`` win over the file."""
        return cls.from_dict({**read_settings(path), **overrides})


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML (``.yaml``/``.yml``) or JSON file, as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        settings = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(f"{path} is not valid {kind}: {' '.join(str(error).split())}") from error
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, found {type(settings).__name__}")
    return settings


def _section_names() -> str:
    return ", ".join(section.__name__ for section in SECTIONS)


def _coerce(section: type, name: str, value: Any) -> Any:
    """A string given for a numeric field, as the number (what argparse would do with a flag's text)."""
    hint = typing.get_type_hints(section)[name]
    numeric = [t for t in typing.get_args(hint) or (hint,) if t in (int, float)]
    if not isinstance(value, str) or not numeric:
        return value
    try:
        return numeric[0](value)
    except ValueError:
        raise ConfigError(f"{name} must be {numeric[0].__name__}, got {value!r}") from None
