"""Run our models through MTEB and sentence-transformers' re-ranking evaluators on local BEIR-layout folders, offline.

* ``BeirRerankingTask``: an MTEB re-ranking task (``AbsTaskRetrieval`` with ``type="Reranking"``) built from a BEIR
  folder and a first-stage run (its top ``depth`` documents become MTEB's ``top_ranked`` candidates).
* ``mteb_cross_encoder``: any cross-encoder or MICE folder as an MTEB model (MTEB's own ``CrossEncoderWrapper``
  around ``sentence_transformers.CrossEncoder`` with remote code allowed; MICE splits the joint pairs itself).
* ``evaluate_with_mteb``: ``mteb.evaluate`` on that task, results stored in MTEB's own ``ResultCache`` layout.
* ``reranking_evaluator`` / ``write_nanobeir_folder``: the same candidates for sentence-transformers'
  ``CrossEncoderRerankingEvaluator`` and ``CrossEncoderNanoBEIREvaluator`` (a local folder whose README declares the
  NanoBEIR configs ``corpus``, ``queries``, ``qrels`` and ``bm25``).
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from ranking_data.beir import BeirData, Run, top_documents

_TASK_METADATA = {
    "description": "A local BEIR-layout collection re-ranked from a first-stage run (built by mice-rerank).",
    "reference": "https://github.com/beir-cellar/beir",
    "dataset": {"path": "NA", "revision": "NA"},
    "category": "t2t",
    "eval_langs": ["eng-Latn"],
    "date": None,
    "dialect": [],
    "domains": [],
    "task_subtypes": [],
    "license": "not specified",
    "annotations_creators": "expert-annotated",
    "modalities": ["text"],
    "sample_creation": "found",
    "bibtex_citation": "",
}


class BeirRerankingTask(AbsTaskRetrieval):
    """MTEB re-ranking task over a local BEIR collection and first-stage candidates; build it with
    ``beir_reranking_task``, which gives each task its own ``TaskMetadata`` (MTEB reads it from the class)."""

    metadata: TaskMetadata
    beir_data: BeirData
    candidates: Run
    depth: int

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        data = self.beir_data
        top_ranked = {q: top_documents(self.candidates.get(q, {}), self.depth) for q in data.queries}
        needed = sorted({d for top in top_ranked.values() for d in top} | {d for j in data.qrels.values() for d in j})
        self.dataset = {
            "default": {
                data.split: RetrievalSplitData(
                    queries=Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
                    corpus=Dataset.from_dict(
                        {
                            "id": needed,
                            "title": [data.corpus[d]["title"] for d in needed],
                            "text": [data.corpus[d]["text"] for d in needed],
                        }
                    ),
                    relevant_docs=data.qrels,
                    top_ranked=top_ranked,
                )
            }
        }
        self.data_loaded = True


def beir_reranking_task(
    data: BeirData, candidates: Run, depth: int = 100, name: str | None = None
) -> BeirRerankingTask:
    """An MTEB re-ranking task: ``data``'s judged queries, each with its top ``depth`` ``candidates``."""
    name = name or f"{data.name}-rerank-top{depth}"
    metadata = TaskMetadata(
        type="Reranking", name=name, main_score="ndcg_at_10", eval_splits=[data.split], **_TASK_METADATA
    )
    task_class = type(name, (BeirRerankingTask,), {"metadata": metadata})
    task = task_class()
    task.beir_data, task.candidates, task.depth = data, candidates, depth
    return task


def mteb_cross_encoder(
    model_name_or_path: str, batch_size: int = 32, device: str | None = None, name: str | None = None
):
    """A cross-encoder or MICE folder as an MTEB ``CrossEncoderProtocol`` model (raw logits, no Sigmoid).

    ``name`` is the model name MTEB files the results under (default: a Hub id as is, ``local/<folder name>``).
    """
    import torch
    from mteb.models.sentence_transformer_wrapper import CrossEncoderWrapper
    from sentence_transformers import CrossEncoder

    from .rerankers import detect_model_kind

    detect_model_kind(model_name_or_path)  # a clear error for a path that does not exist
    model = CrossEncoder(model_name_or_path, device=device, trust_remote_code=True, activation_fn=torch.nn.Identity())
    wrapper = CrossEncoderWrapper(model)
    if name is None:
        local = Path(model_name_or_path).exists()
        name = f"local/{Path(model_name_or_path).name}" if local else model_name_or_path
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"name": name})
    return wrapper


def evaluate_with_mteb(model, task, results_folder: str | Path, batch_size: int = 32, overwrite: bool = True) -> dict:
    """``mteb.evaluate(model, task)`` with results stored under ``results_folder`` (MTEB's ``ResultCache``).

    Returns MTEB's scores for the task's split (``{"ndcg_at_10": ..., "map_at_1000": ..., ...}``).
    """
    import mteb
    from mteb.cache import ResultCache

    result = mteb.evaluate(
        model,
        task,
        cache=ResultCache(str(results_folder)),
        encode_kwargs={"batch_size": batch_size},
        overwrite_strategy="always" if overwrite else "only-missing",
        show_progress_bar=False,
    )
    task_result = result.task_results[0]
    return task_result.scores[task.metadata.eval_splits[0]][0]


def reranking_samples(data: BeirData, candidates: Run, depth: int) -> list[dict]:
    """``CrossEncoderRerankingEvaluator`` samples: ``{query, positive: [texts], documents: [top-depth texts]}``.

    Only relevant judgements (grade > 0) are positives; queries without one are left out, as the evaluator requires.
    """
    samples = []
    for query_id, query in data.queries.items():
        positives = [data.document_text(d) for d, grade in data.qrels[query_id].items() if grade > 0]
        if positives:
            top = top_documents(candidates.get(query_id, {}), depth)
            samples.append({"query": query, "positive": positives, "documents": [data.document_text(d) for d in top]})
    return samples


def reranking_evaluator(data: BeirData, candidates: Run, depth: int = 100, batch_size: int = 32, **kwargs):
    """sentence-transformers' ``CrossEncoderRerankingEvaluator`` on the top ``depth`` candidates.

    ``always_rerank_positives=False`` by default here, so it scores exactly the documents our harness re-ranks.
    """
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    kwargs.setdefault("always_rerank_positives", False)
    return CrossEncoderRerankingEvaluator(
        reranking_samples(data, candidates, depth), batch_size=batch_size, name=data.name, **kwargs
    )


def write_nanobeir_folder(collections: dict[str, tuple[BeirData, Run]], folder: str | Path) -> Path:
    """Write a local dataset folder that ``CrossEncoderNanoBEIREvaluator(dataset_id=folder)`` reads offline.

    Args:
        collections: ``{nanobeir_name: (data, first-stage run)}``; each name must be one of the evaluator's
            datasets (``scifact``, ``nfcorpus``, ...), since it only accepts those; the data can be any collection.
        folder: output folder: ``README.md`` declaring the configs, and one JSON-lines file per config and split.
    """
    from sentence_transformers.cross_encoder.evaluation.nano_beir import DATASET_NAME_TO_HUMAN_READABLE

    folder = Path(folder)
    configs: dict[str, list[str]] = {"corpus": [], "queries": [], "qrels": [], "bm25": []}
    for name, (data, candidates) in collections.items():
        if name.lower() not in DATASET_NAME_TO_HUMAN_READABLE:
            raise ValueError(
                f"{name!r} is not a NanoBEIR dataset name; CrossEncoderNanoBEIREvaluator only accepts "
                f"{sorted(DATASET_NAME_TO_HUMAN_READABLE)}. Use reranking_evaluator() for any other collection."
            )
        split = f"Nano{DATASET_NAME_TO_HUMAN_READABLE[name.lower()]}"
        rows = {
            "corpus": [{"_id": d, "text": data.document_text(d)} for d in data.corpus],
            "queries": [{"_id": q, "text": text} for q, text in data.queries.items()],
            "qrels": [
                {"query-id": q, "corpus-id": d} for q, docs in data.qrels.items() for d, g in docs.items() if g > 0
            ],
            "bm25": [{"query-id": q, "corpus-ids": top_documents(candidates.get(q, {}), 10**9)} for q in data.queries],
        }
        for config, records in rows.items():
            path = folder / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
            configs[config].append(split)
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {config}/{split}.jsonl" for split in splits]
    (folder / "README.md").write_text("\n".join([*lines, "---", "", "NanoBEIR-style re-ranking data.", ""]))
    return folder
