"""Listwise batches and MICE-aware scoring.

A training batch is a few queries, each with a list of n documents. A plain cross-encoder must encode n joint pairs
``[CLS] q [SEP] d [SEP]`` per query. MICE encodes query and document separately below its fusion layer, so the
batch is scored through the model's separate-input forward (Q queries, N = Q*n documents, docs/design.md): each
query's lower layers run once and each document runs once, on its own, which is where the training speed-up comes
from. ``score_lists`` picks the path; ``BatchScores`` hands the scores to unmodified sentence-transformers losses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
class ListwiseDataCollator(CrossEncoderDataCollator):
    """Collates listwise rows into ``{"query": [...], "documents": [[...]], "label": {target: [tensor, ...]}}``.

    Unlike sentence-transformers' collator, which keeps one label column and passes every other column to the loss,
    this keeps all target columns (``scores``, ``ranks``, ``labels``) so that each objective picks the one it trains
    on, and ignores columns other than ``query`` and ``documents`` (ids, for instance).
    """

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
        return batch


def find_mice_model(model: CrossEncoder) -> nn.Module | None:
    """The MICE model inside a CrossEncoder (its ``Transformer`` module's model), or None for any other model."""
    inner = getattr(model[0], "model", None) if len(model) else None
    if inner is not None and getattr(inner.config, "model_type", None) == "mice":
        return inner
    return None


def score_lists(
    model: CrossEncoder,
    queries: Sequence[str],
    documents: Sequence[Sequence[str]],
    *,
    mice_aware: bool = True,
    prompt: str | None = None,
    task: str | None = None,
    forward: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    document_states: DocumentStateMemo | None = None,
) -> Tensor:
    """Raw logits of every (query, document) pair of listwise rows, flattened row by row.

    For a MICE model (and ``mice_aware``) the rows go through the separate-input forward, grouped by list length;
    otherwise through joint pairs, exactly as sentence-transformers' losses score them. ``forward`` is the callable
    that runs the model (the DDP-wrapped model during distributed training); it defaults to ``model``. With
    ``document_states`` (MICE with frozen independent layers), documents are read from that memo, not re-encoded.
    """
    forward = forward or model
    mice = find_mice_model(model) if mice_aware else None
    if mice is None:
        pairs = [(query, doc) for query, docs in zip(queries, documents, strict=True) for doc in docs]
        features = batch_to_device(model.preprocess(pairs, prompt=prompt, task=task), model.device)
        return forward(features)["scores"].view(-1)
    tokenizer = model.tokenizer
    offsets = torch.tensor([0] + [len(docs) for docs in documents]).cumsum(0).tolist()
    positions, logits = [], []
    for length, rows in rows_by_length(documents).items():
        if length == 0:
            continue
        query_texts = [(prompt or "") + queries[row] for row in rows]
        document_texts = [doc for row in rows for doc in documents[row]]
        features = mice.tokenize_queries(tokenizer, query_texts)  # query_input_ids, query_attention_mask
        if document_states is None:
            features |= mice.tokenize_documents(tokenizer, document_texts)
        else:
            features["document_states"] = document_states.states(document_texts)
        if task:
            features["task"] = task
        logits.append(forward(batch_to_device(features, model.device))["scores"].view(-1))
        positions += [offsets[row] + i for row in rows for i in range(length)]
    order = torch.argsort(torch.tensor(positions, device=model.device))
    return torch.cat(logits)[order]


class BatchScores(nn.Module):
    """Stands in for the CrossEncoder inside a loss, answering with the scores already computed for the batch.

    sentence-transformers' losses call ``model.preprocess(pairs)`` and then ``model(features)["scores"]``. This
    module's ``preprocess`` looks each (query, document) pair up among the batch's scored pairs, and ``forward``
    returns those scores, so one MICE-aware forward pass serves every objective of a combined loss. Pairs outside
    the batch's lists (in-batch negatives) are scored on demand, through the same path.
    """

    num_labels = 1

    def __init__(
        self,
        model: CrossEncoder,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        mice_aware: bool = True,
        prompt: str | None = None,
        task: str | None = None,
        forward: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        document_states: DocumentStateMemo | None = None,
    ) -> None:
        super().__init__()
        # Kept out of the module tree: this stand-in owns no parameters.
        self.__dict__["cross_encoder"] = model
        self.scoring = {
            "mice_aware": mice_aware,
            "prompt": prompt,
            "task": task,
            "forward": forward,
            "document_states": document_states,
        }
        self.index: dict[tuple[str, str], int] = {}
        self.scores = self.score(queries, documents, offset=0)

    @property
    def device(self) -> torch.device:
        return self.cross_encoder.device

    def score(self, queries: Sequence[str], documents: Sequence[Sequence[str]], offset: int) -> Tensor:
        """Score the lists and index their pairs, whose scores will sit at ``offset`` onwards in ``self.scores``."""
        scores = score_lists(self.cross_encoder, queries, documents, **self.scoring)
        for i, (query, doc) in enumerate((q, d) for q, docs in zip(queries, documents, strict=True) for d in docs):
            self.index.setdefault((query, doc), offset + i)
        return scores

    def preprocess(self, pairs: Sequence[Sequence[str]], prompt: str | None = None, task: str | None = None) -> dict:
        missing: dict[str, list[str]] = {}
        for query, doc in pairs:
            if (query, doc) not in self.index and doc not in missing.get(query, []):
                missing.setdefault(query, []).append(doc)
        if missing:
            extra = self.score(list(missing), list(missing.values()), offset=len(self.scores))
            self.scores = torch.cat([self.scores, extra])
        return {"pair_index": torch.tensor([self.index[(query, doc)] for query, doc in pairs])}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"scores": self.scores[features["pair_index"].to(self.scores.device)].unsqueeze(-1)}


@contextmanager
def scored_by(loss: nn.Module, model: CrossEncoder, stand_in: BatchScores) -> Iterator[nn.Module]:
    """Within the block, every (sub-)loss whose ``model`` is ``model`` reads its scores from ``stand_in``."""
    owners = [module for module in loss.modules() if getattr(module, "model", None) is model]
    for owner in owners:
        owner.model = stand_in
    try:
        yield loss
    finally:
        for owner in owners:
            owner.model = model
