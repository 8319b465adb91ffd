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

import hashlib
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from indexing.encoding import DocumentEncoder
from indexing.store import DocumentStore


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

    The states are kept in an ``indexing.DocumentStore`` (float32, exact; memory-mapped from disk, so RAM does not
    grow with the number of documents): a temporary one that goes with the memo, or the store in ``folder``, which a
    later run with the same frozen layers reuses. ``max_documents`` bounds the store: when a call would take it past
    the bound, it starts afresh (the documents that come back are encoded again).

    Args:
        mice: a ``MiceForSequenceClassification`` whose independent layers are frozen.
        tokenizer: its tokenizer (documents are truncated to ``max_document_length`` as at inference).
        batch_size: documents encoded per forward pass when several are missing.
        max_documents: keep at most this many documents in the temporary store (``None``: no bound).
        folder: where the store lives (``indexing.DocumentStore.at``); ``None``: a temporary store.
    """

    def __init__(
        self,
        mice: nn.Module,
        tokenizer,
        batch_size: int = 64,
        max_documents: int | None = None,
        folder: str | Path | None = None,
    ):
        if not independent_layers_frozen(mice):
            raise ValueError(
                "caching document states needs MICE's independent layers frozen (otherwise the cached states go "
                "stale as they train): call trainers.freeze_independent_layers(model) or pass "
                "--freeze-independent-layers, or switch the cache off (cache_document_states=False)"
            )
        if max_documents is not None and max_documents < 1:
            raise ValueError(f"max_documents must be at least 1 (or None for no bound), got {max_documents}")
        if max_documents is not None and folder is not None:
            raise ValueError("max_documents bounds a temporary store; a store in a folder keeps every document")
        self.mice, self.max_documents = mice, max_documents
        self.encoder = DocumentEncoder(mice, tokenizer, batch_size)
        self.store = DocumentStore.at(folder, self.encoder.fingerprint)
        self.encoded = 0  # documents run through the lower layers, re-encodings after a reset included

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, text: str) -> bool:
        return _key(text) in self.store

    def states(self, texts: Sequence[str]):
        """``MiceDocumentStates`` of ``texts`` in order (right-padded to the longest), encoding the missing ones."""
        documents = {_key(text): text for text in texts}
        missing = sum(key not in self.store for key in documents)
        if self.max_documents is not None and missing and len(self.store) + missing > self.max_documents:
            self.store.close()
            self.store = DocumentStore.temporary(self.encoder.fingerprint)
        self.encoded += len(self.store.encode_missing(documents, self.encoder))
        return self.store.get([_key(text) for text in texts], device=self.mice.device)


def _key(text: str) -> str:
    """The store's id of a document known only by its text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
