"""Listwise batches: collated and tokenized before the training step, then scored in one forward pass.

A training batch is a few queries, each with a list of n documents. A plain cross-encoder must encode n joint pairs
``[CLS] q [SEP] d [SEP]`` per query (:class:`JointPairInputs`). MICE encodes query and document separately below its
fusion layer, so its batch goes through the model's separate-input forward (Q queries, N = Q*n documents,
docs/design.md): each query's lower layers run once and each document runs once, on its own, which is where the
training speed-up comes from (:class:`MiceInputs`). Tokenization happens in the collator, so with
``dataloader_num_workers`` it runs in the DataLoader's workers while the model trains; :func:`score_inputs` then
runs the model once per batch and every objective computes its loss from those scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder.data_collator import CrossEncoderDataCollator
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn

from .frozen_documents import DocumentStateMemo
from .losses.listwise import TARGET_COLUMNS, rows_by_length


@dataclass
class JointPairInputs:
    """Model inputs of lists for any cross-encoder: the joint ``(query, document)`` pairs, tokenized by the
    model's own ``preprocess`` (what sentence-transformers' losses would do inside the step)."""

    preprocess_fn: Callable

    def __call__(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], prompt: str | None = None, task=None
    ) -> dict[str, Any]:
        pairs = [(query, doc) for query, docs in zip(queries, documents, strict=True) for doc in docs]
        return {"pairs": self.preprocess_fn(pairs, prompt=prompt, task=task)}


@dataclass
class MiceInputs:
    """Model inputs of lists for MICE's separate-input forward, one group per list length: the group's queries
    and, unless their states are cached (``encode_documents=False``: the texts are passed on instead), its
    documents, tokenized as ``MiceForSequenceClassification.tokenize_queries`` / ``tokenize_documents`` do but
    without moving to the model's device (the Trainer does that), so that DataLoader workers can run it."""

    tokenizer: Any
    max_query_length: int
    max_document_length: int
    encode_documents: bool = True

    @classmethod
    def for_model(cls, mice: nn.Module, tokenizer, encode_documents: bool = True) -> MiceInputs:
        config = mice.config
        return cls(tokenizer, config.max_query_length, config.max_document_length, encode_documents)

    def tokenize(self, texts: list[str], side: str, limit: int) -> dict[str, Tensor]:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=limit, return_tensors="pt", return_token_type_ids=False
        )
        return {f"{side}_input_ids": encoded["input_ids"], f"{side}_attention_mask": encoded["attention_mask"]}

    def __call__(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], prompt: str | None = None, task=None
    ) -> dict[str, Any]:
        offsets = torch.tensor([0] + [len(docs) for docs in documents]).cumsum(0).tolist()
        groups, positions = [], []
        for length, rows in rows_by_length(documents).items():
            if length == 0:
                continue
            group = self.tokenize([(prompt or "") + queries[row] for row in rows], "query", self.max_query_length)
            texts = [doc for row in rows for doc in documents[row]]
            if self.encode_documents:
                group |= self.tokenize(texts, "document", self.max_document_length)
            else:
                group["document_texts"] = texts
            if task:
                group["task"] = task
            groups.append(group)
            positions += [offsets[row] + i for row in rows for i in range(length)]
        return {"groups": groups, "order": torch.argsort(torch.tensor(positions))}


ListInputs = JointPairInputs | MiceInputs


def score_inputs(model: nn.Module, inputs: dict[str, Any], document_states: DocumentStateMemo | None = None) -> Tensor:
    """Raw logits of the pairs that :class:`JointPairInputs` or :class:`MiceInputs` tokenized, list by list.

    ``model`` is what runs the CrossEncoder (the DDP-wrapped model during distributed training). With
    ``document_states``, MICE reads the documents' fusion-layer states from that memo instead of encoding them.
    """
    if "pairs" in inputs:
        return model(inputs["pairs"])["scores"].view(-1).float()
    logits = []
    for group in inputs["groups"]:
        features = {key: value for key, value in group.items() if key != "document_texts"}
        if "document_texts" in group:
            features["document_states"] = document_states.states(group["document_texts"])
        logits.append(model(features)["scores"].view(-1))
    return torch.cat(logits)[inputs["order"].to(logits[0].device)].float()


def find_mice_model(model: CrossEncoder) -> nn.Module | None:
    """The MICE model inside a CrossEncoder (its ``Transformer`` module's model), or None for any other model."""
    inner = getattr(model[0], "model", None) if len(model) else None
    if inner is not None and getattr(inner.config, "model_type", None) == "mice":
        return inner
    return None


def list_inputs_for(model: CrossEncoder, mice_aware: bool = True, encode_documents: bool = True) -> ListInputs:
    """How to tokenize lists for ``model``: MICE's separate inputs (``mice_aware``) or joint pairs."""
    mice = find_mice_model(model) if mice_aware else None
    if mice is None:
        return JointPairInputs(model.preprocess)
    return MiceInputs.for_model(mice, model.tokenizer, encode_documents)


def score_lists(
    model: CrossEncoder,
    queries: Sequence[str],
    documents: Sequence[Sequence[str]],
    *,
    mice_aware: bool = True,
    document_states: DocumentStateMemo | None = None,
) -> Tensor:
    """Raw logits of every (query, document) pair of the lists, flattened list by list, in one scoring pass."""
    inputs = list_inputs_for(model, mice_aware, encode_documents=document_states is None)(queries, documents)
    return score_inputs(model, batch_to_device(inputs, model.device), document_states)


@dataclass
class ListwiseDataCollator(CrossEncoderDataCollator):
    """Collates listwise rows into ``{"query": [...], "documents": [[...]], "label": {target: [tensor, ...]}}``,
    plus ``"model_inputs"``, the lists tokenized by ``list_inputs`` when the trainer sets it.

    Unlike sentence-transformers' collator, which keeps one label column and passes every other column to the loss,
    this keeps all target columns (``scores``, ``ranks``, ``labels``) so that each objective picks the one it trains
    on, and ignores columns other than ``query`` and ``documents`` (ids, for instance). With ``all_pairs`` every
    query is tokenized against every document of the batch (for in-batch negatives).
    """

    list_inputs: ListInputs | None = None
    all_pairs: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        if "dataset_name" in features[0]:
            batch["dataset_name"] = features[0]["dataset_name"]
        batch["label"] = {
            column: [torch.tensor(row[column], dtype=torch.float32) for row in features]
            for column in TARGET_COLUMNS
            if features[0].get(column) is not None
        }
        prompt = self._resolve_scalar(self.prompts, batch)
        if prompt:
            batch["prompt"] = prompt
        task = self._resolve_scalar(self.router_mapping, batch)
        if task:
            batch["task"] = task
        batch["query"] = [row["query"] for row in features]
        batch["documents"] = [list(row["documents"]) for row in features]
        if self.list_inputs is not None:
            documents = batch["documents"]
            if self.all_pairs:
                documents = [[doc for docs in documents for doc in docs]] * len(documents)
            batch["model_inputs"] = self.list_inputs(batch["query"], documents, prompt, task)
        return batch
