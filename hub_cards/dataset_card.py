"""Dataset cards for teacher-score datasets (configs `train`, `queries`, `documents`), filled from the data itself
and from what its builder recorded."""

from __future__ import annotations

from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from .citations import DISTILLATION_STUDY
from .model_card import TEMPLATES
from .records import TeacherDataset
from .tables import Table, key_value_table

# Hub size categories (https://huggingface.co/docs/hub/datasets-cards), by number of training rows.
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


def render_dataset_card(
    dataset: TeacherDataset,
    *,
    repo_id: str | None = None,
    hub_metadata: dict[str, Any] | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> DatasetCard:
    """Render the card of a teacher-score dataset.

    Args:
        dataset: what `records.read_teacher_dataset` read.
        repo_id: the Hub id the loading snippet uses; a placeholder when not given.
        hub_metadata: metadata already in the Hub repository's README (the `configs` / `dataset_info` that
            `datasets.push_to_hub` writes); kept so that `load_dataset(repo_id, config)` keeps finding the configs.
        license: licence of the dataset; by default the one its builder recorded.
    """
    record = dataset.record
    teacher = record.get("teacher") if isinstance(record.get("teacher"), dict) else {}
    train = dataset.configs["train"]
    lists = train["document_ids"]
    card_data = DatasetCardData(
        **(hub_metadata or {}),
        pretty_name=record.get("name") or (repo_id.split("/")[-1] if repo_id else dataset.folder.name),
        license=license or record.get("license"),
        language=record.get("language"),
        size_categories=_size_category(len(train)),
        task_categories=["text-ranking"],
        tags=["knowledge-distillation", "teacher-scores", "reranking", "mice-rerank"],
    )
    context = {
        "title": card_data.pretty_name,
        "card_data_license": card_data.license,
        "repo_id": repo_id or f"<namespace>/{dataset.folder.name}",
        "record": record,
        "teacher": teacher,
        "schema": {name: _schema(config) for name, config in dataset.configs.items()},
        "counts": Table(
            ["", ""],
            [
                ["training queries (rows of `train`)", f"{len(train):,}"],
                ["queries", f"{len(dataset.configs['queries']):,}"],
                ["documents", f"{len(dataset.configs['documents']):,}"],
                ["scored candidates", f"{sum(len(ids) for ids in lists):,}"],
                ["candidates per query (min / mean / max)", _spread([len(ids) for ids in lists])],
            ],
        ),
        "has_scores": "scores" in train.column_names,
        "has_ranks": "ranks" in train.column_names,
        "has_labels": "labels" in train.column_names,
        "positives": _positives(train) if "labels" in train.column_names else None,
        "teacher_members": key_value_table(
            {m.get("name", str(i)): m for i, m in enumerate(teacher.get("members", []))}
        ),
        "details": key_value_table({k: v for k, v in record.items() if k not in ("teacher", "candidates")}),
        "citations": [DISTILLATION_STUDY],
    }
    return DatasetCard.from_template(card_data, template_path=str(TEMPLATES / "dataset_card.md"), **context)


def _size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1M")


def _schema(dataset: Any) -> Table:
    return Table(["column", "type"], [[f"`{name}`", f"`{feature}`"] for name, feature in dataset.features.items()])


def _spread(values: list[int]) -> str:
    if not values:
        return "–"
    return f"{min(values)} / {sum(values) / len(values):.1f} / {max(values)}"


def _positives(train: Any) -> str:
    per_query = [sum(1 for label in labels if label > 0) for labels in train["labels"]]
    return _spread(per_query)
