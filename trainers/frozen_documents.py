"""Training MICE with frozen independent layers: each document is encoded once, then only its states are reused.

Below the fusion layer MICE reads a document on its own. Once those layers (embeddings included) are frozen, a
document's fusion-layer states cannot change during training, so the trainer computes them the first time the
document appears and afterwards runs only the query side: the frozen lower layers on the query and the trainable
interaction layers, whose cross-attention reads the cached states. Per pair, training then costs the interaction
layers over the query tokens instead of every kept layer over query and document (docs/design.md).

The frozen layers run without dropout (in eval mode) for queries and documents alike, so cached and freshly
computed states are the same and match what the model computes at inference.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


def independent_parameters(mice: nn.Module) -> list[nn.Parameter]:
    """The parameters of MICE's embeddings and independent (lower) layers.

    BERT's pooler lives in the same base model but reads the last interaction layer's [CLS]: it is part of the head,
    so it is not among them.
    """
    return [p for name, p in mice.mice.backbone.named_parameters() if not name.startswith("pooler.")]


def freeze_independent_layers(mice: nn.Module) -> int:
    """Freeze MICE's embeddings and independent (lower) layers; returns how many parameters were frozen.

    ``mice`` is a ``MiceForSequenceClassification`` (for a CrossEncoder, ``trainers.find_mice_model(model)``).
    """
    parameters = independent_parameters(mice)
    for parameter in parameters:
        parameter.requires_grad_(False)
    return sum(p.numel() for p in parameters)


def independent_layers_frozen(mice: nn.Module) -> bool:
    """True when no parameter below MICE's fusion layer is trainable."""
    return not any(p.requires_grad for p in independent_parameters(mice))


class DocumentStateMemo:
    """Fusion-layer states of documents by text, computed on first use with the frozen independent layers.

    Memory: one ``(tokens, hidden)`` tensor per document in the model's dtype, e.g. 3,000 documents of 128 tokens
    with hidden size 384 in float32 take 590 MB. ``max_documents`` bounds it (least recently used are dropped
    and recomputed when they come back).

    Args:
        mice: a ``MiceForSequenceClassification`` whose independent layers are frozen.
        tokenizer: its tokenizer (documents are truncated to ``max_document_length`` as at inference).
        batch_size: documents encoded per forward pass when several are missing.
        max_documents: keep at most this many documents (``None``: no bound).
    """

    def __init__(self, mice: nn.Module, tokenizer, batch_size: int = 64, max_documents: int | None = None):
        if not independent_layers_frozen(mice):
            raise ValueError(
                "caching document states needs MICE's independent layers frozen (otherwise the cached states go "
                "stale as they train): call trainers.freeze_independent_layers(model) or pass "
                "--freeze-independent-layers, or switch the cache off (cache_document_states=False)"
            )
        if max_documents is not None and max_documents < 1:
            raise ValueError(f"max_documents must be at least 1 (or None for no bound), got {max_documents}")
        self.mice, self.tokenizer = mice, tokenizer
        self.batch_size, self.max_documents = batch_size, max_documents
        self.entries: OrderedDict[str, object] = OrderedDict()
        self.encoded = 0  # documents run through the lower layers, re-encodings after eviction included

    def __len__(self) -> int:
        return len(self.entries)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> None:
        backbone = self.mice.mice.backbone
        training = backbone.training
        backbone.eval()
        try:
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                states = self.mice.encode_documents(**self.mice.tokenize_documents(self.tokenizer, chunk))
                lengths = states.attention_mask.sum(dim=1).tolist()
                for row, (text, length) in enumerate(zip(chunk, lengths, strict=True)):
                    # A trimmed copy, so that the batch's padded tensor is not kept alive by its rows.
                    self.entries[text] = type(states)(
                        states.hidden_states[row : row + 1, :length].clone(),
                        states.attention_mask[row : row + 1, :length].clone(),
                    )
                self.encoded += len(chunk)
        finally:
            backbone.train(training)

    def states(self, texts: Sequence[str]):
        """``MiceDocumentStates`` of ``texts`` in order (right-padded to the longest), encoding the missing ones."""
        missing = list(dict.fromkeys(text for text in texts if text not in self.entries))
        if missing:
            self._encode(missing)
        rows = []
        for text in texts:
            self.entries.move_to_end(text)
            rows.append(self.entries[text])
        if self.max_documents is not None:
            while len(self.entries) > max(self.max_documents, len(set(texts))):
                self.entries.popitem(last=False)
        return type(rows[0]).concatenate(rows)
