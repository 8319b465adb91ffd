"""The light dual encoder (DE-2, Ananthakrishnan et al., arXiv 2502.03552), distilled from a trained cross-encoder.

:func:`build_light_dual_encoder` takes the cross-encoder's (or MICE model's) embeddings and first ``copied_layers``
layers, adds layers up to ``layers`` in all (seeded from the cross-encoder's top layers moved down, from its next
layers, or freshly initialised), then mean pooling: a standard ``SentenceTransformer`` with cosine similarity.
:func:`distill_embedder` trains it with sentence-transformers' ``SentenceTransformerTrainer``:

1. teacher scores: BM25 candidates of the training queries of a BEIR folder, scored by the cross-encoder
   (``ranking_data.teacher_data.build_from_beir``, resumable), or a given teacher-score dataset;
2. rows ``(query, positive, hardest negatives)`` with the teacher's scores, trained with
   :class:`~embeddings.losses.ContrastiveDistillationLoss` (InfoNCE on the labelled positive against the hard and
   in-batch negatives, plus KL distillation of the teacher's scores);
3. optionally, ``pair_queries`` further labelled training queries that the teacher never scored, as
   ``(query, positive)`` pairs with in-batch negatives (sentence-transformers' ``MultipleNegativesRankingLoss``),
   and with ``pair_negatives`` of BM25's best non-relevant documents as hard negatives: labelled data is cheap where
   teacher scores are not;
4. optionally, embedding-level distillation from a stronger dual encoder (``embedding_teacher``): every text of the
   rows and pairs, its embedding matched to the teacher's with sentence-transformers' ``EmbedDistillLoss`` (cosine;
   the teacher's embeddings are computed once, resumably, and kept in the work folder), plus the lines of
   ``embedding_texts``, a text file of text broader than the training data's;
   the datasets take turns, one batch each (``sampler="round-robin"``), or are drawn in proportion to their sizes
   (``"proportional"``: a large embedding set then takes most steps);
5. the model trained is a new one built from the cross-encoder or, with ``continue_from``, an earlier output of
   this function trained further (a second stage with other data). It is written to ``output`` (a
   ``SentenceTransformer`` folder with ``embedder_record.json`` for the card). Checkpoints go to the work folder; a
   re-run resumes from the last one (with more steps, it trains further), and returns at once when the output is
   complete. A work folder started with other settings is refused (``ranking_data.work_folders``).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from evaluation.first_stage import cache_key, encode_in_chunks
from indexing.fingerprint import model_fingerprint
from ranking_data.beir import BeirData, BeirFormatError, load_beir
from ranking_data.work_folders import claim_folder

from .early_layers import EarlyLayerEncoder, EarlyLayerError, check_layer, describe_source, source_layers

EMBEDDER_RECORD = "embedder_record.json"
NEW_LAYERS = ("next", "top", "random")
SAMPLERS = ("round-robin", "proportional")
logger = logging.getLogger(__name__)


@dataclass
class EmbedderDistillationConfig:
    """Everything a light dual encoder's distillation depends on (the ``mice distill-embedder`` flags)."""

    cross_encoder: str = field(metadata={"help": "cross-encoder or MICE folder whose embeddings and layers are copied"})
    data: str = field(metadata={"help": "BEIR folder whose training split gives queries, positives and candidates"})
    output: str = field(metadata={"help": "where the SentenceTransformer folder is written"})
    layers: int = field(default=2, metadata={"help": "transformer layers of the dual encoder"})
    copied_layers: int = field(default=1, metadata={"help": "of which copied from the cross-encoder (the rest new)"})
    new_layers: Literal["next", "top", "random"] = field(
        default="top",
        metadata={"help": "new layers seeded from the cross-encoder's top layers, its next layers, or random"},
    )
    teacher: str | None = field(
        default=None, metadata={"help": "cross-encoder or MICE folder scoring the candidates (default: cross_encoder)"}
    )
    teacher_data: str | None = field(
        default=None, metadata={"help": "a saved teacher-score dataset to train on instead of scoring candidates"}
    )
    split: str = field(default="train", metadata={"help": "qrels split of the training queries"})
    max_queries: int | None = field(default=None, metadata={"help": "a random sample of this many training queries"})
    candidates: int = field(default=30, metadata={"help": "BM25 candidates scored by the teacher per query"})
    negatives: int = field(default=3, metadata={"help": "hard negatives per training row (the teacher's best)"})
    distillation_weight: float = field(default=1.0, metadata={"help": "weight of the KL distillation term"})
    teacher_temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the teacher's scores"})
    temperature: float = field(default=0.05, metadata={"help": "softmax temperature of the cosine similarities"})
    pair_queries: int = field(
        default=0,
        metadata={"help": "further labelled training queries (not teacher-scored), trained as (query, positive) pairs"},
    )
    pair_negatives: int = field(
        default=0, metadata={"help": "BM25's best non-relevant documents added to each pair as hard negatives"}
    )
    embedding_teacher: str | None = field(
        default=None, metadata={"help": "a stronger SentenceTransformer whose embeddings are also distilled"}
    )
    embedding_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the embedding distillation loss (its batches alternate with the others', so once their "
            "gradient norm passes max_grad_norm, clipping cancels a larger weight)"
        },
    )
    embedding_texts: str | None = field(
        default=None,
        metadata={
            "help": "a UTF-8 text file, one text per line, whose embeddings by the embedding teacher are distilled too "
            "(text broader than the training data's)"
        },
    )
    sampler: Literal["round-robin", "proportional"] = field(
        default="round-robin",
        metadata={
            "help": "how the losses' datasets share the steps: one batch each in turn, or in proportion to their "
            "sizes (with many embedding texts, most steps then distil embeddings)"
        },
    )
    max_length: int = field(default=256, metadata={"help": "tokens per text of the saved model"})
    train_max_length: int = field(default=128, metadata={"help": "tokens per text while training"})
    pooling: Literal["mean", "cls"] = field(default="mean", metadata={"help": "pooling of the token states"})
    continue_from: str | None = field(
        default=None,
        metadata={"help": "a light dual encoder written by distill-embedder to train further instead of a new one"},
    )
    freeze_copied_layers: bool = field(
        default=False, metadata={"help": "train the new layers only (the copied ones keep the cross-encoder's)"}
    )
    batch_size: int = field(default=32, metadata={"help": "training rows per step"})
    max_steps: int = field(default=1000, metadata={"help": "training steps"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate (linear decay, warm-up)"})
    new_layer_learning_rate: float | None = field(
        default=None, metadata={"help": "learning rate of the new layers (default: learning_rate)"}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of the steps spent warming up"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient norm clipped to (0: no clipping)"})
    seed: int = field(default=12, metadata={"help": "seed of the query sample, the negatives and the training"})
    save_steps: int = field(default=200, metadata={"help": "checkpoint every this many steps (resume point)"})
    work_folder: str | None = field(
        default=None, metadata={"help": "teacher scores and checkpoints (default: OUTPUT-work next to the output)"}
    )

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.layers < 1 or not 0 <= self.copied_layers <= self.layers:
            raise ValueError(
                f"need 1 <= layers and 0 <= copied_layers <= layers, got {self.layers}, {self.copied_layers}"
            )
        if self.new_layers not in NEW_LAYERS:
            raise ValueError(f"new_layers must be one of {', '.join(NEW_LAYERS)}, not {self.new_layers!r}")
        for name in ("negatives", "candidates", "batch_size", "max_steps", "max_length", "train_max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("pair_queries", "pair_negatives", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(
                f"warmup_ratio is a share of the steps: need 0 <= warmup_ratio < 1, got {self.warmup_ratio}"
            )
        if self.pair_negatives and not self.pair_queries:
            raise ValueError("pair_negatives needs pair_queries: there are no pairs to add negatives to")
        if self.embedding_texts and not self.embedding_teacher:
            raise ValueError("embedding_texts needs embedding_teacher: there is no teacher to embed them")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        if self.candidates <= self.negatives:
            raise ValueError(f"candidates ({self.candidates}) must exceed negatives ({self.negatives})")

    @property
    def work(self) -> Path:
        return (
            Path(self.work_folder)
            if self.work_folder
            else Path(self.output).with_name(Path(self.output).name + "-work")
        )


# Presets: settings measured on the hardware they name (docs/results.md).
PRESETS: dict[str, dict[str, Any]] = {
    # The quickstart's embedder step: under a minute of training on 2 CPU cores. On the packaged Debian sample, with
    # 640 teacher-scored queries, 150 steps at 3e-4 gave a dense nDCG@10 of 0.638 (55 s), at 1e-4 0.561 after 100
    # steps and 0.626 after 300 (116 s); unfreezing the copied layer gave 0.645 for 90 s (docs/results.md). Those
    # had the new layer seeded from the next one; seeded from the top one (session 19), the quickstart's run went from
    # 0.606 to 0.727 on the test split.
    "quickstart": {
        "max_queries": 600,
        "candidates": 10,
        "negatives": 1,
        "batch_size": 16,
        "max_steps": 150,
        "learning_rate": 3e-4,
        "train_max_length": 96,
        "save_steps": 50,
        "freeze_copied_layers": True,
    },
}


def config_from_preset(preset: str, **settings: Any) -> EmbedderDistillationConfig:
    """A config from a preset of :data:`PRESETS`, ``settings`` overriding it (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in settings.items() if v is not None}}
    return EmbedderDistillationConfig(**values)


def build_light_dual_encoder(
    cross_encoder: str | Path,
    layers: int = 2,
    copied_layers: int = 1,
    new_layers: Literal["next", "top", "random"] = "top",
    max_length: int = 256,
    pooling: Literal["mean", "cls"] = "mean",
) -> SentenceTransformer:
    """A ``SentenceTransformer`` of ``layers`` layers: the cross-encoder's embeddings and first ``copied_layers``
    layers, then ``layers - copied_layers`` new ones, then pooling. The new layers are seeded from the cross-encoder's
    top layers moved down (``"top"``: the layers that shaped its final states; far better starting points than the
    next ones, docs/results.md), from its next layers (``"next"``: its first ``layers`` layers, unchanged), or freshly
    initialised (``"random"``). A moved layer takes its new place's kind where a family's layers differ by position
    (ModernBERT alternates global and local attention).

    Raises:
        EarlyLayerError: not a cross-encoder or MICE folder (e.g. a bi-encoder), or more layers than it has.
    """
    new = layers - copied_layers
    if new_layers == "top":
        available = source_layers(cross_encoder)  # checked before the whole model is loaded
        check_layer(layers, available, f"{cross_encoder}: {available} layers to copy and seed from")
        encoder = EarlyLayerEncoder.from_pretrained(cross_encoder)
        seed_from = encoder.num_layers - new
    else:
        encoder = EarlyLayerEncoder.from_pretrained(cross_encoder, layers if new_layers == "next" else copied_layers)
        seed_from = copied_layers if new_layers == "next" else None
    layer_model = encoder.export_encoder(layers, copied_layers, seed_from)
    return encoder.sentence_transformer(pooling=pooling, max_length=max_length, encoder=layer_model)


def _teacher(path: str):
    from ranking_data.teachers import CrossEncoderTeacher, MiceTeacher

    if describe_source(path) == "mice":
        return MiceTeacher.from_pretrained(path)
    return CrossEncoderTeacher(path)


def teacher_dataset(config: EmbedderDistillationConfig, show_progress: bool = True):
    """The teacher-score dataset the rows come from: ``config.teacher_data``, or BM25 candidates of the training
    queries scored by the teacher (saved in the work folder; an interrupted scoring resumes)."""
    from ranking_data.teacher_data import TeacherDataset, build_from_beir

    if config.teacher_data:
        return TeacherDataset.load_from_disk(config.teacher_data)
    folder = config.work / "teacher_dataset"
    if (folder / "dataset_dict.json").is_file():
        return TeacherDataset.load_from_disk(folder)
    return build_from_beir(
        config.data,
        folder,
        split=config.split,
        teacher=_teacher(config.teacher or config.cross_encoder),
        depth=config.candidates,
        max_queries=config.max_queries,
        seed=config.seed,
        show_progress=show_progress,
    )


def ranking_rows(teacher_data, negatives: int, relevant: dict[str, set[str]] | None = None) -> datasets.Dataset:
    """``(query, positive, negative_1..n, label)`` rows: a positive and the ``negatives`` best-scored other
    candidates, with the teacher's scores as ``label``.

    The positive is a candidate the teacher data labels relevant; where it labels none, one that ``relevant`` (query
    text -> relevant document texts, e.g. the data folder's qrels) does; where the data has no labels at all and no
    ``relevant`` is given, the teacher's best. Queries with no positive or too few candidates are left out."""
    columns: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i + 1}": [] for i in range(negatives)}}
    columns["label"] = []
    for row in teacher_data.training_rows():
        labels = row.get("labels")
        if relevant is not None and not any(label > 0 for label in labels or []):
            known = relevant.get(row["query"], set())
            labels = [int(document in known) for document in row["documents"]]
        labels = labels or [1] + [0] * (len(row["documents"]) - 1)
        positives = [i for i, label in enumerate(labels) if label > 0]
        others = [i for i, label in enumerate(labels) if label <= 0]
        if not positives or len(others) < negatives:
            continue
        # Documents are stored in teacher order: the first non-positives are the hardest negatives.
        chosen = [positives[0], *others[:negatives]]
        columns["query"].append(row["query"])
        columns["positive"].append(row["documents"][chosen[0]])
        for i, index in enumerate(chosen[1:]):
            columns[f"negative_{i + 1}"].append(row["documents"][index])
        columns["label"].append([float(row["scores"][i]) for i in chosen])
    if not columns["query"]:
        raise ValueError(f"no training row: no query has a positive and {negatives} other candidates")
    return datasets.Dataset.from_dict(columns)


def relevant_documents(data: BeirData) -> dict[str, list[str]]:
    """Query id -> the ids of its relevant documents (qrels score above 0), sorted; queries with none are left out."""
    relevant = {q: sorted(d for d, score in judged.items() if score > 0) for q, judged in data.qrels.items()}
    return {q: documents for q, documents in relevant.items() if documents}


def labelled_pairs(data: BeirData, count: int, exclude: set[str], seed: int, negatives: int = 0) -> datasets.Dataset:
    """``(anchor, positive)``: ``count`` judged queries of ``data`` drawn with ``seed``, leaving out the query texts in
    ``exclude`` (those already in the ranking rows), each with its relevant document (the lowest id where several).

    With ``negatives``, columns ``negative_1..n`` hold BM25's best documents not judged relevant to the query (hard
    negatives for ``MultipleNegativesRankingLoss``); a query with fewer such BM25 matches is left out.

    Raises:
        ValueError: fewer such queries than ``count``.
    """
    relevant = relevant_documents(data)
    judged = sorted(q for q in relevant if data.queries[q] not in exclude)
    if len(judged) < count:
        raise ValueError(
            f"pair_queries is {count} but {data.name} has only {len(judged)} further judged queries; lower it"
        )
    chosen = random.Random(seed).sample(judged, count)
    hard: dict[str, list[str]] = {}
    if negatives:
        from ranking_data.bm25 import BM25Retriever

        depth = negatives + max(len(relevant[q]) for q in chosen)
        run = BM25Retriever().index(data.corpus).search({q: data.queries[q] for q in chosen}, k=depth)
        for q in chosen:
            ranked = sorted(run[q], key=run[q].__getitem__, reverse=True)
            hard[q] = [d for d in ranked if d not in relevant[q]][:negatives]
        kept = [q for q in chosen if len(hard[q]) == negatives]
        logger.info("%d of %d pairs have %d BM25 negatives; the rest are left out", len(kept), count, negatives)
        chosen = kept
    columns = {
        "anchor": [data.queries[q] for q in chosen],
        "positive": [data.document_text(relevant[q][0]) for q in chosen],
    }
    for i in range(negatives):
        columns[f"negative_{i + 1}"] = [data.document_text(hard[q][i]) for q in chosen]
    return datasets.Dataset.from_dict(columns)


def dataset_texts(*tables: datasets.Dataset) -> list[str]:
    """Every distinct text of the tables' text columns (not ``label``), in order of first appearance."""
    return list(
        dict.fromkeys(
            t for table in tables for column in table.column_names if column != "label" for t in table[column]
        )
    )


def read_texts(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped.

    Raises:
        ValueError: the file is missing, not UTF-8 text, or has no text.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"cannot read the embedding texts {path} ({error}): give a UTF-8 file, one text per line"
        ) from error
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"{path} has no text: give a UTF-8 file, one text per line")
    return texts


def embedding_rows(
    texts: list[str],
    teacher: str,
    folder: Path,
    batch_size: int = 64,
    show_progress: bool = True,
    width: int | None = None,
) -> datasets.Dataset:
    """``(text, label)``: each of ``texts`` with its embedding by ``teacher``.

    The embeddings are saved chunk by chunk (``evaluation.first_stage.encode_in_chunks``) under a subfolder of
    ``folder`` named by a digest of the teacher's weights, its maximum length and the texts: an interrupted run
    resumes from its last chunk, and another teacher or another sample of texts is embedded anew, never served the
    targets of the first.

    Raises:
        ValueError: ``width`` is given and the teacher's embeddings are not that wide (checked before encoding).
    """
    model = SentenceTransformer(teacher)
    if width is not None and model.get_embedding_dimension() != width:
        raise ValueError(
            f"the embedding teacher {teacher} gives {model.get_embedding_dimension()}-dimensional "
            f"embeddings, the dual encoder {width}-dimensional ones: choose a teacher of the dual encoder's width"
        )
    encoded = encode_in_chunks(
        texts,
        lambda chunk: {"label": model.encode(chunk, batch_size=batch_size, convert_to_numpy=True)},
        folder / cache_key(model_fingerprint(model), model.max_seq_length, texts),
        show_progress=show_progress,
        description="embedding teacher targets",
    )
    return datasets.Dataset.from_dict({"text": texts, "label": encoded.arrays["label"].astype(np.float32).tolist()})


def _new_layer_pattern(model: SentenceTransformer, copied_layers: int, layers: int) -> str | None:
    """A regex of the parameter names of the layers above the copied ones, or None when there are none."""
    if copied_layers >= layers:
        return None
    indices = "|".join(str(i) for i in range(copied_layers, layers))
    return rf"\.(layer|layers)\.({indices})\."


def _freeze_copied(model: SentenceTransformer, copied_layers: int) -> None:
    from .early_layers import _layer_index

    for name, parameter in model.named_parameters():
        if _layer_index(name) < copied_layers:
            parameter.requires_grad_(False)


def _objectives(loss_map: dict[str, torch.nn.Module], config: EmbedderDistillationConfig) -> list[dict[str, Any]]:
    ranking = loss_map["ranking"].get_config_dict()
    objectives = [
        {"name": ranking["contrastive"].pop("name"), "weight": 1.0, "config": ranking["contrastive"]},
        {
            "name": ranking["distillation"].pop("name"),
            "weight": config.distillation_weight,
            "config": ranking["distillation"],
        },
    ]
    if "pairs" in loss_map:
        pairs = loss_map["pairs"].get_config_dict()
        objectives.append({"name": type(loss_map["pairs"]).__name__, "weight": 1.0, "config": pairs})
    if "embedding" in loss_map:
        objectives.append(
            {
                "name": type(loss_map["embedding"].loss).__name__,
                "weight": config.embedding_weight,
                "config": {**loss_map["embedding"].get_config_dict(), "teacher": config.embedding_teacher},
            }
        )
    return objectives


class _Scaled(torch.nn.Module):
    """A loss times a constant weight (sentence-transformers has no weight argument on a multi-dataset loss)."""

    def __init__(self, loss: torch.nn.Module, weight: float):
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, sentence_features, labels):
        return self.weight * self.loss(sentence_features, labels)

    def get_config_dict(self) -> dict[str, Any]:
        return self.loss.get_config_dict()


def distill_embedder(config: EmbedderDistillationConfig, show_progress: bool = True) -> Path:
    """Build and train the light dual encoder; returns the output folder (module docstring).

    Raises:
        EarlyLayerError: the cross-encoder is not one (a bi-encoder, a bare encoder) or has too few layers.
        BeirFormatError: the data folder is not a BEIR folder or has no such split (an empty corpus included).
        ValueError: a setting that cannot work, or no usable training row.
    """
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers
    from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss, MultipleNegativesRankingLoss
    from transformers.trainer_utils import get_last_checkpoint

    from .losses import ContrastiveDistillationLoss

    config.check()
    output, work = Path(config.output), config.work
    recorded = read_embedder_record(output)
    if recorded is not None and recorded.get("config") == _jsonable(config):
        logger.info("%s is complete (same settings), nothing to do", output)
        return output
    describe_source(config.cross_encoder)
    if config.teacher:
        describe_source(config.teacher)
    data = load_beir(config.data, config.split)  # a clear BeirFormatError for a bad or empty folder
    if not data.corpus:
        raise BeirFormatError(f"{config.data} has an empty corpus")
    broad_texts = read_texts(config.embedding_texts) if config.embedding_texts else []  # refused before any scoring
    # More steps train the same run further; anything else that decides what the work folder holds must match.
    left_out = ("output", "work_folder", "save_steps", "max_steps")
    claim_folder(work, {k: v for k, v in _jsonable(config).items() if k not in left_out}, "distill-embedder")

    parent = _continued_record(config) if config.continue_from else None
    model = (
        SentenceTransformer(config.continue_from)
        if parent
        else build_light_dual_encoder(
            config.cross_encoder,
            config.layers,
            config.copied_layers,
            config.new_layers,
            config.max_length,
            config.pooling,
        )
    )
    model.max_seq_length = min(config.train_max_length, config.max_length)
    if config.freeze_copied_layers:
        _freeze_copied(model, config.copied_layers)
    relevant = {data.queries[q]: set(map(data.document_text, ids)) for q, ids in relevant_documents(data).items()}
    rows = ranking_rows(teacher_dataset(config, show_progress), config.negatives, relevant)
    train: dict[str, datasets.Dataset] = {"ranking": rows}
    losses: dict[str, torch.nn.Module] = {
        "ranking": ContrastiveDistillationLoss(
            model, 1.0 / config.temperature, config.distillation_weight, config.teacher_temperature
        )
    }
    if config.pair_queries:
        train["pairs"] = labelled_pairs(
            data, config.pair_queries, set(rows["query"]), config.seed, config.pair_negatives
        )
        losses["pairs"] = MultipleNegativesRankingLoss(model, scale=1.0 / config.temperature)
    if config.embedding_teacher:
        texts = list(dict.fromkeys(dataset_texts(*train.values()) + broad_texts))
        train["embedding"] = embedding_rows(
            texts,
            config.embedding_teacher,
            config.work / "embedding_targets",
            show_progress=show_progress,
            width=model.get_embedding_dimension(),
        )
        losses["embedding"] = _Scaled(EmbedDistillLoss(model, distance_metric="cosine"), config.embedding_weight)

    new_layers = _new_layer_pattern(model, config.copied_layers, config.layers)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        learning_rate_mapping={new_layers: config.new_layer_learning_rate}
        if new_layers and config.new_layer_learning_rate
        else None,
        warmup_steps=config.warmup_ratio,  # transformers 5 reads a value below 1 as a share of max_steps
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=max(config.max_steps // 20, 1),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL
        if config.sampler == "proportional"
        else MultiDatasetBatchSamplers.ROUND_ROBIN,
        report_to=[],
        disable_tqdm=not show_progress,
        dataloader_drop_last=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train if len(train) > 1 else rows,
        loss=losses if len(train) > 1 else losses["ranking"],
    )
    checkpoints = work / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        logger.info("resuming from %s", last)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    runtime = time.perf_counter() - started

    model.max_seq_length = config.max_length
    temporary = output.with_name(output.name + ".tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    model.save(str(temporary))
    record = {
        "model_type": "dual-encoder",
        "source": config.cross_encoder,
        "source_kind": describe_source(config.cross_encoder),
        "layers": config.layers,
        "copied_layers": config.copied_layers,
        "new_layers": config.new_layers,
        "pooling": config.pooling,
        "max_length": config.max_length,
        "similarity": "cosine",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "teacher": {
            "name": config.teacher_data or config.teacher or config.cross_encoder,
            "description": "teacher-score dataset" if config.teacher_data else "raw logits on BM25 candidates",
        },
        "embedding_teacher": config.embedding_teacher,
        "objectives": _objectives(losses, config),
        "data": {
            "dataset": data.name,
            "split": config.split,
            "train_rows": len(rows),
            "negatives_per_row": config.negatives,
            "pair_rows": len(train["pairs"]) if "pairs" in train else 0,
            "pair_negatives_per_row": config.pair_negatives,
            "embedding_texts": len(train["embedding"]) if "embedding" in train else 0,
            "embedding_text_file": config.embedding_texts,
        },
        "hyperparameters": {
            key: getattr(config, key)
            for key in (
                "max_steps",
                "batch_size",
                "learning_rate",
                "new_layer_learning_rate",
                "warmup_ratio",
                "max_grad_norm",
                "sampler",
                "temperature",
                "teacher_temperature",
                "train_max_length",
                "freeze_copied_layers",
                "seed",
            )
        },
        "train_runtime_s": runtime,
        "resumed_from": last,
        "continued_from": parent,
        "final_train_loss": result.training_loss,
        "config": _jsonable(config),
    }
    (temporary / EMBEDDER_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    temporary.rename(output)
    return output


def _continued_record(config: EmbedderDistillationConfig) -> dict[str, Any]:
    """What the card says of the model ``continue_from`` names: its path, training and earlier stages.

    Raises:
        ValueError: not a distill-embedder output, or its architecture differs from the config's.
    """
    record = read_embedder_record(config.continue_from)
    if record is None:
        raise ValueError(
            f"continue_from {config.continue_from} has no {EMBEDDER_RECORD}: give a folder written by distill-embedder"
        )
    for name in ("layers", "copied_layers", "pooling"):
        if record[name] != getattr(config, name):
            raise ValueError(
                f"continue_from {config.continue_from} has {name}={record[name]} but this run asks for "
                f"{getattr(config, name)}; set {name} to {record[name]}"
            )
    return {
        "path": config.continue_from,
        "max_steps": record["hyperparameters"]["max_steps"],
        "train_runtime_s": record["train_runtime_s"],
        "objectives": [o["name"] for o in record["objectives"]],
        "data": record["data"],
        "continued_from": record.get("continued_from"),
    }


def read_embedder_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``embedder_record.json`` of a finished distillation, or None."""
    path = Path(folder) / EMBEDDER_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _jsonable(config: EmbedderDistillationConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))


__all__ = [
    "EMBEDDER_RECORD",
    "PRESETS",
    "EmbedderDistillationConfig",
    "EarlyLayerError",
    "build_light_dual_encoder",
    "config_from_preset",
    "distill_embedder",
    "labelled_pairs",
    "ranking_rows",
    "read_embedder_record",
    "read_texts",
]
