"""Readers for what training, evaluation and teacher-data runs record; the cards are filled only from these.

Each input format is read in exactly one function here, so a change in a producer's layout is fixed in one place:
`read_training_record` (trainers), `read_embedder_record` (embeddings), `read_evaluation` (evaluation),
`read_latency` (scripts/bench_latency.py), `read_teacher_dataset` (ranking_data.teacher_data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINING_RECORD = "training_record.json"
EMBEDDER_RECORD = "embedder_record.json"
EVALUATION_FILE = "evaluation.json"
# Metrics in the order the cards show them; anything else recorded follows.
METRIC_ORDER = ("ndcg@10", "mrr@10", "recall@100", "map")


class RecordError(ValueError):
    """A recorded file is missing or does not have the layout the cards read."""


@dataclass
class SystemResults:
    """One evaluated system, per dataset: metrics, latency, MICE document encoding, significance."""

    name: str
    kind: str
    model_path: str | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> metric -> value
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> measure -> value
    document_encoding: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> measure -> value
    better_than: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # dataset -> metric -> systems


@dataclass
class EvaluationResults:
    source: Path
    settings: dict[str, Any]
    datasets: dict[str, dict[str, Any]]  # dataset -> split, queries, documents, ...
    systems: dict[str, SystemResults]
    significance_test: str | None = None  # e.g. "paired two-sided Student's t-test (scipy.stats.ttest_rel)"
    max_p: float | None = None


@dataclass
class LatencyBenchmark:
    """A `scripts/bench_latency.py` result: per system the median latency, speed-up and FLOPs; and its settings."""

    source: Path
    systems: dict[str, dict[str, float]]  # "ce" | "mice" | "mice_cached" | "st_ce" -> measure -> value
    settings: dict[str, Any]


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


def training_budget(record: dict[str, Any]) -> str:
    """What a model's training cost, from its training record: steps, queries and documents per step, wall time."""
    hyperparameters, data = record["hyperparameters"], record.get("data", {})
    budget = f"{hyperparameters['max_steps']} steps × {hyperparameters['per_device_train_batch_size']} queries"
    if data.get("list_size"):
        budget += f" × {data['list_size']} documents"
    if record.get("train_runtime_s"):
        budget += f", {record['train_runtime_s']:.0f} s"
    if "conversion" in record:
        budget += "; converted from a cross-encoder, no labels"
    return budget


def read_embedder_record(model_folder: str | Path) -> dict[str, Any]:
    """`embedder_record.json` of a light dual encoder written by `embeddings.distillation.distill_embedder`."""
    path = Path(model_folder) / EMBEDDER_RECORD
    record = _load_json(path, "embedder record")
    if record.get("model_type") != "dual-encoder":
        raise RecordError(f"{path}: model_type must be 'dual-encoder', found {record.get('model_type')!r}")
    for key in ("source", "layers", "copied_layers", "objectives", "data", "hyperparameters"):
        if key not in record:
            raise RecordError(f"{path} has no {key!r}: it is written by `mice distill-embedder`; re-run it")
    return record


def find_evaluation_file(model_folder: str | Path) -> Path | None:
    """`evaluation.json` next to the model, or two folders up (the quickstart's `models/<name>/` layout)."""
    folder = Path(model_folder).resolve()
    for candidate in (folder / EVALUATION_FILE, folder.parent.parent / EVALUATION_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_evaluation(path: str | Path) -> EvaluationResults:
    """`evaluation.json` written by `scripts/evaluate.py` (`evaluation.harness.evaluate_systems`).

    Layout: `settings`; `systems: {name: {"kind", "model", ...}}`; `datasets: {name: {"split", "queries", ...}}`;
    `results: {system: {dataset: {"metrics": {...}, "latency": {...}, ["document_encoding": {...}]}}}`;
    `significance: {dataset: {"better_than": {system: {metric: [systems]}}, ...}}`.
    """
    path = Path(path)
    data = _load_json(path, "evaluation file")
    if not isinstance(data.get("systems"), dict) or not isinstance(data.get("results"), dict):
        raise RecordError(f"{path} has no 'systems' and 'results': is it an evaluation.json from scripts/evaluate.py?")
    systems = {}
    for name, description in data["systems"].items():
        system = SystemResults(name=name, kind=str(description.get("kind", "")), model_path=description.get("model"))
        for dataset, entry in data["results"].get(name, {}).items():
            system.metrics[dataset] = {k: float(v) for k, v in entry.get("metrics", {}).items() if _is_number(v)}
            system.latency[dataset] = {k: v for k, v in (entry.get("latency") or {}).items() if _is_number(v)}
            encoding = entry.get("document_encoding") or {}
            system.document_encoding[dataset] = {k: v for k, v in encoding.items() if _is_number(v)}
        for dataset, significance in (data.get("significance") or {}).items():
            system.better_than[dataset] = (significance.get("better_than") or {}).get(name, {})
        systems[name] = system
    tests = list((data.get("significance") or {}).values())
    return EvaluationResults(
        source=path,
        settings=dict(data.get("settings") or {}),
        datasets=dict(data.get("datasets") or {}),
        systems=systems,
        significance_test=tests[0].get("test") if tests else None,
        max_p=tests[0].get("max_p") if tests else None,
    )


def read_latency(path: str | Path) -> LatencyBenchmark:
    """The JSON line `scripts/bench_latency.py --json PATH` writes: `<system>_ms`, `<system>_gflop`,
    `<system>_gflops` for the systems `ce`, `mice`, `mice_cached`, `st_ce`, `speedup(_cached)`, and its settings."""
    path = Path(path)
    data = _load_json(path, "latency file")
    if "ce_ms" not in data:
        raise RecordError(f"{path} has no 'ce_ms': is it the JSON written by scripts/bench_latency.py --json?")
    systems: dict[str, dict[str, float]] = {}
    for system in ("ce", "mice", "mice_cached", "st_ce"):
        measures = {
            m: data[f"{system}_{m}"] for m in ("ms", "gflop", "gflops") if _is_number(data.get(f"{system}_{m}"))
        }
        if measures:
            systems[system] = measures
    for system, key in (("mice", "speedup"), ("mice_cached", "speedup_cached")):
        if system in systems and _is_number(data.get(key)):
            systems[system]["speedup"] = data[key]
    measured = {f"{system}_{m}" for system in systems for m in ("ms", "gflop", "gflops")} | {
        "speedup",
        "speedup_cached",
    }
    settings = {k: v for k, v in data.items() if k not in measured}
    return LatencyBenchmark(source=path, systems=systems, settings=settings)


def read_teacher_dataset(folder: str | Path) -> TeacherDataset:
    """A teacher-score dataset saved by `ranking_data.teacher_data.TeacherDataset.save_to_disk` (validated on load),
    with the metadata its builder recorded (teacher, and whatever the caller passed: candidates, source, licence)."""
    from ranking_data.teacher_data import TeacherDataError
    from ranking_data.teacher_data import TeacherDataset as SavedTeacherDataset

    try:
        saved = SavedTeacherDataset.load_from_disk(folder)
    except TeacherDataError as error:
        raise RecordError(str(error)) from None
    return TeacherDataset(folder=Path(folder), configs=saved.hub_configs(), record=dict(saved.metadata))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
