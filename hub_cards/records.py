"""Readers for what training, evaluation and teacher-data runs record; the cards are filled only from these.

Each input format is read in exactly one function here, so a change in a producer's layout is fixed in one place:
`read_training_record` (trainers), `read_evaluation` (evaluation), `read_latency` (scripts/bench_latency.py),
`read_teacher_dataset` (trainers.teacher_data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINING_RECORD = "training_record.json"
EVALUATION_FILE = "evaluation.json"
# Metrics in the order the cards show them; anything else recorded follows.
METRIC_ORDER = ("ndcg@10", "mrr@10", "recall@100", "map")


class RecordError(ValueError):
    """A recorded file is missing or does not have the layout the cards read."""


@dataclass
class SystemResults:
    """One evaluated system: metrics and latency per dataset, and the model folder it was loaded from (if recorded)."""

    name: str
    model_path: str | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> metric -> value
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> measure -> value


@dataclass
class EvaluationResults:
    source: Path
    settings: dict[str, Any]
    systems: dict[str, SystemResults]


@dataclass
class TeacherDataset:
    """A teacher-score dataset on disk (three configs) with what its builder recorded about it."""

    folder: Path
    configs: dict[str, Any]  # config name -> datasets.Dataset
    record: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(dataset) for name, dataset in self.configs.items()}


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as error:
        raise RecordError(f"{what} {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{what} {path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_training_record(model_folder: str | Path) -> dict[str, Any]:
    """`training_record.json` of a trained model folder (layout in docs/design.md, "Training outputs")."""
    path = Path(model_folder) / TRAINING_RECORD
    record = _load_json(path, "training record")
    if record.get("model_type") not in ("mice", "cross-encoder"):
        raise RecordError(
            f"{path}: model_type must be 'mice' or 'cross-encoder', found {record.get('model_type')!r}; "
            "it is written by the trainer, re-run training or fix the record"
        )
    for key in ("backbone", "objectives", "hyperparameters"):
        if key not in record:
            raise RecordError(f"{path} has no {key!r}: the model card needs it (see docs/design.md)")
    return record


def find_evaluation_file(model_folder: str | Path) -> Path | None:
    """`evaluation.json` next to the model, or two folders up (the quickstart's `models/<name>/` layout)."""
    folder = Path(model_folder).resolve()
    for candidate in (folder / EVALUATION_FILE, folder.parent.parent / EVALUATION_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_evaluation(path: str | Path) -> EvaluationResults:
    """`evaluation.json` written by `scripts/evaluate.py`.

    Layout: `{"settings": {...}, "systems": {name: {"model": path|null, "datasets": {dataset: {"ndcg@10": float,
    ..., "latency": {measure: float}}}}}}`.
    """
    path = Path(path)
    data = _load_json(path, "evaluation file")
    if not isinstance(data.get("systems"), dict):
        raise RecordError(f"{path} has no 'systems' object: is it an evaluation.json written by scripts/evaluate.py?")
    systems = {}
    for name, system in data["systems"].items():
        results = SystemResults(name=name, model_path=system.get("model"))
        for dataset, values in system.get("datasets", {}).items():
            results.latency[dataset] = dict(values.get("latency") or {})
            results.metrics[dataset] = {k: float(v) for k, v in values.items() if k != "latency" and _is_number(v)}
        systems[name] = results
    return EvaluationResults(source=path, settings=dict(data.get("settings") or {}), systems=systems)


def read_latency(path: str | Path) -> dict[str, dict[str, float]]:
    """A `scripts/bench_latency.py` result: `{"systems": {name: {measure: float}}, "settings": {...}}` -> per system."""
    path = Path(path)
    data = _load_json(path, "latency file")
    if not isinstance(data.get("systems"), dict):
        raise RecordError(f"{path} has no 'systems' object: is it a result of scripts/bench_latency.py?")
    return {name: {k: v for k, v in values.items() if _is_number(v)} for name, values in data["systems"].items()}


def read_teacher_dataset(folder: str | Path) -> TeacherDataset:
    """A teacher-score dataset saved by `trainers.teacher_data.TeacherDataset.save_to_disk` (validated on load),
    with the metadata its builder recorded (teacher, and whatever the caller passed: candidates, source, licence)."""
    from trainers.teacher_data import TeacherDataError
    from trainers.teacher_data import TeacherDataset as SavedTeacherDataset

    try:
        saved = SavedTeacherDataset.load_from_disk(folder)
    except TeacherDataError as error:
        raise RecordError(str(error)) from None
    return TeacherDataset(folder=Path(folder), configs=saved.hub_configs(), record=dict(saved.metadata))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
