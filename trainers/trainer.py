"""The distillation trainer: sentence-transformers' CrossEncoderTrainer on listwise rows, MICE-aware.

It trains whatever CrossEncoder it is given: a standard sequence-classification cross-encoder, or MICE loaded as a
CrossEncoder (``trust_remote_code``). Rows are ``{"query", "documents", "scores"[, "ranks"][, "labels"]}``
(docs/design.md). The collator tokenizes each batch (``trainers.batching``); the step scores it once, through MICE's
separate-input forward when the model is MICE, and every objective computes its loss from those scores
(``ListwiseObjective.loss_from_scores``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
from torch import nn
from transformers.trainer import TRAINING_ARGS_NAME

from .batching import ListwiseDataCollator, find_mice_model, list_inputs_for, score_inputs
from .frozen_documents import DocumentStateMemo, independent_layers_frozen
from .losses import MarginMSELoss
from .losses.listwise import TARGET_COLUMNS, ListScores, ListwiseObjective, is_finite

# The classification head's parameters: MICE's `classification_head`, a transformers cross-encoder's `classifier`.
HEAD_PARAMETERS = r"\.(classification_head|classifier)\."

logger = logging.getLogger(__name__)


@dataclass
class DistillationTrainingArguments(CrossEncoderTrainingArguments):
    """``CrossEncoderTrainingArguments`` plus the distillation trainer's own settings.

    Args:
        head_learning_rate: learning rate of the classification head (a new head starts from random weights and may
            take larger steps than the pretrained layers); default: ``learning_rate``.
        mice_aware_batching: score MICE lists through their separate-input forward (each query's lower layers run
            once per list). Switch off only to compare with the joint-pair path; other models ignore it.
        cache_document_states: when MICE's independent layers are frozen (``trainers.freeze_independent_layers``),
            encode each document once and reuse its states (``trainers.frozen_documents``).
        document_cache_size: at most this many documents in that cache (default: no bound).
        resume: ``trainers.train`` resumes from the last complete checkpoint in ``output_dir``.
    """

    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the classification head (default: learning_rate)."}
    )
    mice_aware_batching: bool = field(
        default=True, metadata={"help": "Score MICE lists with the separate-input forward (query encoded once)."}
    )
    cache_document_states: bool = field(
        default=True, metadata={"help": "MICE with frozen independent layers: encode each document once."}
    )
    document_cache_size: int | None = field(
        default=None, metadata={"help": "At most this many documents in the document-state cache."}
    )
    resume: bool = field(
        default=True, metadata={"help": "Resume from the last complete checkpoint in output_dir (train())."}
    )

    def __post_init__(self) -> None:
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.accelerator.is_available():
            # Several processes on a machine without an accelerator: data-parallel on the CPU over gloo (accelerate's
            # MULTI_CPU). Without use_cpu, transformers would let every process train alone on the whole data.
            self.use_cpu = True
        super().__post_init__()
        if self.head_learning_rate is not None:
            self.learning_rate_mapping = {**self.learning_rate_mapping, HEAD_PARAMETERS: self.head_learning_rate}


class DistillationTrainer(CrossEncoderTrainer):
    """Trains a cross-encoder or a MICE model on listwise rows with any objective of ``trainers.losses``.

    Same arguments as :class:`~sentence_transformers.cross_encoder.CrossEncoderTrainer`; ``args`` must be
    :class:`DistillationTrainingArguments` and the default loss is :class:`~trainers.losses.MarginMSELoss`.
    The training and evaluation sets are checked row by row before training (empty set, list too short for an
    objective, NaN or infinite scores, targets that do not match the documents), and a bad row is reported with
    its index and query. Any other sentence-transformers loss trains too; it scores the pairs itself.
    """

    data_collator_class = ListwiseDataCollator
    training_args_class = DistillationTrainingArguments

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        losses = self.loss if isinstance(self.loss, dict) else {None: self.loss}
        for name, dataset in (("training", self.train_dataset), ("evaluation", self.eval_dataset)):
            for subset, rows in dataset.items() if isinstance(dataset, Mapping) else [(None, dataset)]:
                if rows is not None:
                    label = f"{name} set" + (f" {subset!r}" if subset else "")
                    validate_rows(rows, losses.get(subset, losses.get(None)), label)
        mice = find_mice_model(self.model)
        mice_aware = mice is not None and self.args.mice_aware_batching
        self.document_states = None
        if mice_aware and self.args.cache_document_states and independent_layers_frozen(mice):
            self.document_states = DocumentStateMemo(
                mice, self.model.tokenizer, max_documents=self.args.document_cache_size
            )
        if all(isinstance(loss, ListwiseObjective) for loss in losses.values()):
            # Objectives compute from scores: the collator tokenizes, the step runs the model once.
            self.data_collator.list_inputs = list_inputs_for(
                self.model, mice_aware, encode_documents=self.document_states is None
            )
            self.data_collator.all_pairs = any(loss.in_batch_pairs for loss in losses.values())

    def get_default_loss(self, model) -> nn.Module:
        return MarginMSELoss(model)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # sentence-transformers pickles the arguments beside the model (training_args.bin); keep them as JSON so a
        # saved model holds no pickle. Resuming does not read them (checkpoints keep the optimizer's own state).
        if not self.args.should_save:
            # transformers 5 calls _save on every process, but sentence-transformers' _save assumes process zero: on
            # the others it would write the model and arguments again, racing the main process in the same folder.
            return
        super()._save(output_dir, state_dict)
        folder = output_dir if output_dir is not None else self.args.output_dir
        with open(os.path.join(folder, "training_args.json"), "w", encoding="utf-8") as file:
            file.write(self.args.to_json_string())
        os.remove(os.path.join(folder, TRAINING_ARGS_NAME))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        model_inputs = inputs.pop("model_inputs", None)
        if model_inputs is None:
            # A sentence-transformers loss scores the pairs itself, from the one label column it trains on.
            targets = inputs["label"]
            inputs["label"] = next((targets[c] for c in ("scores", "labels") if targets.get(c) is not None), None)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        dataset_name = inputs.pop("dataset_name", None)
        loss_fn = self.loss[dataset_name] if isinstance(self.loss, dict) else self.loss
        if self.document_states is not None:
            # Frozen layers run without dropout, so a query's states match the cached documents' (and inference).
            find_mice_model(self.model).mice.backbone.eval()
        flat = score_inputs(model, model_inputs, self.document_states)
        scores = ListScores.from_flat(flat, inputs["documents"], all_pairs=self.data_collator.all_pairs)
        loss = loss_fn.loss_from_scores(scores, inputs["label"])
        if isinstance(loss, dict):
            self.track_loss_components(loss)
            loss = torch.stack(list(loss.values())).sum()
        return (loss, {}) if return_outputs else loss


def validate_rows(dataset: Dataset | DatasetDict, loss: nn.Module | None, name: str = "training set") -> None:
    """Check listwise rows before training; raise ``ValueError`` naming the first bad row and what is wrong."""
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty: there is nothing to train on. Check the teacher dataset and filters.")
    # Columns as the trainer sees them: a lazily joined dataset only has "query"/"documents" after its transform.
    columns = list(dataset[0])
    missing = {"query", "documents"} - set(columns)
    if missing:
        raise ValueError(
            f"The {name} has no {sorted(missing)} column(s); listwise rows are "
            '{"query": str, "documents": list[str], "scores": list[float], ["ranks"], ["labels"]} '
            f"(got columns {columns})."
        )
    targets = [column for column in TARGET_COLUMNS if column in columns]
    objective = loss if isinstance(loss, ListwiseObjective) else None
    index = 0
    for chunk in dataset.iter(batch_size=1024):
        for query, documents, *values in zip(*(chunk[c] for c in ["query", "documents", *targets]), strict=True):
            row_targets = dict(zip(targets, values, strict=True))
            problem = row_problem(documents, row_targets) or (
                objective.row_problem(len(documents), row_targets) if objective else None
            )
            if problem:
                raise ValueError(f"Row {index} of the {name} (query {query!r}): {problem}.")
            index += 1


def row_problem(documents: list[str], targets: dict[str, list | None]) -> str | None:
    """What is wrong with one row regardless of the objective, or None."""
    if not documents:
        return "the list of documents is empty"
    for column, values in targets.items():
        if values is None:
            continue
        if len(values) != len(documents):
            return f"{len(documents)} documents but {len(values)} {column}"
        if not is_finite(values):
            position = next(i for i, v in enumerate(values) if not is_finite([v]))
            return f"{column} has a non-finite value ({values[position]}) at position {position}"
    return None
