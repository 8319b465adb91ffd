"""Model cards for light dual encoders (`mice distill-embedder`), filled from `embedder_record.json` and, where one
is found, the `evaluation.json` of a run that used the model as its first stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .model_card import CODE_LICENSE, TEMPLATES, _number, _resolve
from .records import EvaluationResults, find_evaluation_file, read_embedder_record, read_evaluation
from .tables import Table, key_value_table

CROSS_ENCODER_EMBEDDINGS = """@misc{ananthakrishnan2025crossencodersembeddings,
    title={Can Cross Encoders Produce Useful Sentence Embeddings?},
    author={Haritha Ananthakrishnan and Julian Dolby and Harsha Kokel and Horst Samulowitz and Kavitha Srinivas},
    year={2025},
    eprint={2502.03552},
    archivePrefix={arXiv},
    url={https://arxiv.org/abs/2502.03552},
}"""

SENTENCE_BERT = """@inproceedings{reimers-2019-sentence-bert,
    title={Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks},
    author={Reimers, Nils and Gurevych, Iryna},
    booktitle={Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing},
    year={2019},
    url={https://arxiv.org/abs/1908.10084},
}"""

FIRST_STAGE_PREFIXES = ("dense:", "hybrid:")


def render_embedder_card(
    model_folder: str | Path,
    *,
    evaluation: str | Path | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> ModelCard:
    """Render the card of a light dual encoder folder.

    Args:
        model_folder: a `mice distill-embedder` output (a SentenceTransformer folder with `embedder_record.json`).
        evaluation: an `evaluation.json`; by default the one next to the model or two folders up (quickstart layout).
            Its datasets whose first stage was this model (`--first-stage dense:` or `hybrid:` this folder) are shown.
        repo_id: the Hub id the usage snippets load; a placeholder when not given.
        base_model: the Hub id of the cross-encoder the model was distilled from, when it is on the Hub.
        license: licence of the weights.
    """
    folder = Path(model_folder)
    record = read_embedder_record(folder)
    evaluation_path = Path(evaluation) if evaluation else find_evaluation_file(folder)
    results = read_evaluation(evaluation_path) if evaluation_path else None
    datasets = _datasets_retrieved_by(results, folder) if results else []
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1] if repo_id else folder.name,
        base_model=base_model,
        license=license,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=[
            "sentence-transformers",
            "feature-extraction",
            "dense-retrieval",
            "knowledge-distillation",
            "mice-rerank",
        ],
    )
    new = record["layers"] - record["copied_layers"]
    seeded = {
        "next": "seeded from the cross-encoder's next layers",
        "top": "seeded from the cross-encoder's top layers",
    }.get(record.get("new_layers", "next"), "newly initialised")
    context = {
        "title": card_data.model_name,
        "repo_id": repo_id or f"<namespace>/{folder.name}",
        "record": record,
        "source": base_model or record["source"],
        "new_layers_text": f"{new} new layer{'s' if new != 1 else ''} on top ({seeded})" if new else "no new layer",
        "architecture": _architecture(record),
        "objectives": [
            {**o, "config_json": json.dumps(o.get("config", {}), sort_keys=True)} for o in record["objectives"]
        ],
        "data": key_value_table(record["data"]),
        "hyperparameters": key_value_table(record["hyperparameters"]),
        "evaluation": results,
        "first_stage": datasets[0][1] if datasets else None,
        "metrics_table": _metrics_table(results, datasets) if datasets else None,
        "weights_license": license,
        "code_license": CODE_LICENSE,
        "citations": [CROSS_ENCODER_EMBEDDINGS, SENTENCE_BERT],
    }
    return ModelCard.from_template(card_data, template_path=str(TEMPLATES / "embedder_card.md"), **context)


def _architecture(record: dict[str, Any]) -> Table:
    rows = [
        ["Model type", "dual encoder (sentence embeddings, cosine similarity)"],
        ["Distilled from", f"`{record['source']}` ({record.get('source_kind', 'cross-encoder')})"],
        ["Layers", str(record["layers"])],
        ["Copied from the cross-encoder", f"embeddings and layers 0–{record['copied_layers'] - 1}"
         if record["copied_layers"] else "embeddings only"],
        ["New layers", f"{record['layers'] - record['copied_layers']} ({record.get('new_layers', 'next')})"],
        ["Pooling", str(record.get("pooling", "mean"))],
        ["Max sequence length", f"{record.get('max_length')} tokens"],
    ]  # fmt: skip
    if record.get("num_parameters"):
        rows.append(["Parameters", f"{record['num_parameters'] / 1e6:.1f}M ({record['num_parameters']:,})"])
    return Table(["", ""], rows)


def _datasets_retrieved_by(results: EvaluationResults, folder: Path) -> list[tuple[str, str]]:
    """``(dataset, first-stage system)`` for every dataset of ``results`` whose first stage was this model."""
    target = folder.resolve()
    first_stages = [name for name, system in results.systems.items() if system.kind == "first-stage"]
    found = []
    for dataset, entry in results.datasets.items():
        source = str(entry.get("first_stage") or "")
        path = source.rsplit("@", 1)[0].rsplit("dense:", 1)[-1] if source.startswith(FIRST_STAGE_PREFIXES) else None
        if path and first_stages and _resolve(results, path) == target:
            found.append((dataset, first_stages[0]))
    return found


def _metrics_table(results: EvaluationResults, datasets: list[tuple[str, str]]) -> Table:
    """Every system on the datasets this model retrieved for (the first stage, then what re-ranked it)."""
    metrics = ["ndcg@10", "recall@100", "mrr@10", "map"]
    rows = []
    for dataset, first_stage in datasets:
        queries = results.datasets[dataset].get("queries")
        for name, system in results.systems.items():
            values = system.metrics.get(dataset)
            if values:
                label = f"**{name} (this model)**" if name == first_stage else f"{name} (re-ranking it)"
                rows.append([dataset, _number(queries), label, *[_number(values.get(m)) for m in metrics]])
    return Table(["Dataset", "Queries", "System", *metrics], rows)
