"""Running MICE's independent layers over document texts, for the store.

``DocumentEncoder`` tokenizes every text first and encodes them in length-sorted batches (padding is most of a
batch's work when lengths vary), always with the lower layers in eval mode (no dropout: stored states must equal
what the model computes at inference, also while the rest of the model trains), and returns each document's states
trimmed to its length. The batches depend only on the texts given, so the same texts give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .fingerprint import document_state_fingerprint


class DocumentEncoder:
    """Encodes document texts into per-document `(Ld, H)` float32 states on the CPU.

    Args:
        model: a ``MiceForSequenceClassification``.
        tokenizer: its tokenizer (documents are cut at ``max_document_length`` tokens, as at inference).
        batch_size: documents per forward pass.
        show_progress: a progress bar over the batches of large calls.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, batch_size: int = 32, show_progress: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.show_progress = show_progress
        self._fingerprint: dict[str, Any] | None = None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The model's ``document_state_fingerprint`` (computed once: it digests the lower layers' weights)."""
        if self._fingerprint is None:
            self._fingerprint = document_state_fingerprint(self.model, self.tokenizer)
        return self._fingerprint

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """The states of each text, in order, each trimmed to its own tokens."""
        texts = list(texts)
        if not texts:
            return []
        model = self.model
        ids = self.tokenizer(
            texts,
            truncation=True,
            max_length=model.config.max_document_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: (len(ids[i]), i))
        pad = self.tokenizer.pad_token_id
        backbone = model.mice.backbone
        training = backbone.training
        backbone.eval()
        states: list[torch.Tensor | None] = [None] * len(texts)
        try:
            batches = range(0, len(order), self.batch_size)
            for begin in tqdm(batches, desc="encoding documents", disable=not self.show_progress or len(batches) < 4):
                batch = order[begin : begin + self.batch_size]
                length = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), length), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                encoded = model.encode_documents(
                    document_input_ids=input_ids.to(model.device), document_attention_mask=mask.to(model.device)
                )
                hidden = encoded.hidden_states.float().cpu()
                for row, i in enumerate(batch):
                    states[i] = hidden[row, : len(ids[i])].clone()
        finally:
            backbone.train(training)
        return states
