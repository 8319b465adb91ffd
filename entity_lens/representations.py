"""Entity representations: the residual stream after block ℓ (`blocks.{ℓ}.hook_resid_post`) at an entity mention.

Modes (where the model reads the entity), following the paper's code:
- `raw`: the entity alone, `<bos> entity`;
- `context`: the entity inside its text, `<bos> text up to and including the mention` (a causal model never sees
  what follows the mention, so the rest of the text is not run);
- `after_context`: the whole text, then the entity again, `<bos> text entity`: the mention read after the context.

Pooling: `last` takes the mention's last token (the method); `mean` averages over the mention's tokens (the
paper's baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import EntityLensError
from .hooks import check_layers, resid_post, run_with_cache

Mode = Literal["raw", "context", "after_context"]
Pooling = Literal["last", "mean"]
MODES: tuple[str, ...] = ("raw", "context", "after_context")
POOLINGS: tuple[str, ...] = ("last", "mean")


@dataclass(frozen=True)
class EntityMention:
    """An entity mention: `entity` as written, in `text` at character `start` (its first occurrence when None).
    `text` may be empty in `raw` mode."""

    entity: str
    text: str = ""
    start: int | None = None

    def span(self) -> tuple[int, int]:
        """Character span of the mention in `text`, or an `EntityLensError` if it is not there."""
        start = self.text.find(self.entity) if self.start is None else self.start
        if start < 0 or self.text[start : start + len(self.entity)] != self.entity:
            where = "" if self.start is None else f" at character {self.start}"
            raise EntityLensError(
                f"the entity {self.entity!r} does not occur in the text{where}: give the mention exactly as it is "
                "written in the text"
            )
        return start, start + len(self.entity)


def check_mode(mode: str, pooling: str = "last") -> None:
    if mode not in MODES:
        raise EntityLensError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if pooling not in POOLINGS:
        raise EntityLensError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")


def mention_input(tokenizer: PreTrainedTokenizerBase, mention: EntityMention, mode: str) -> tuple[list[int], list[int]]:
    """Token ids the model reads for `mention` in `mode`, and the positions of the mention's tokens among them."""
    check_mode(mode)
    if not mention.entity.strip():
        raise EntityLensError("the entity is empty: give the mention of an entity (for example 'Barack Obama')")
    if mode == "raw":
        string, (start, end) = mention.entity, (0, len(mention.entity))
    elif mode == "context":
        start, end = mention.span()
        string = mention.text[:end]
    else:
        mention.span()  # the entity must be in the text it is read after
        string = f"{mention.text} {mention.entity}"
        start, end = len(mention.text) + 1, len(string)
    encoded = tokenizer(string, add_special_tokens=False, return_offsets_mapping=True)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    positions = [
        len(bos) + index
        for index, (token_start, token_end) in enumerate(encoded["offset_mapping"])
        if token_start < end and token_end > start and token_end > token_start
    ]
    if not positions:
        raise EntityLensError(
            f"the entity {mention.entity!r} maps to no token of the model's tokenizer: give a mention with at least "
            "one word"
        )
    return bos + encoded["input_ids"], positions


@torch.no_grad()
def extract_representations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    mentions: Sequence[EntityMention],
    layers: Sequence[int],
    mode: str = "raw",
    pooling: str = "last",
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """`resid_post` of each mention at each layer, pooled over its tokens: a float32 tensor (N, len(layers), d).

    One forward pass per batch reads every layer at once, stopping after the deepest one. Batches are filled in
    order of length and right-padded: a causal model's states at the mention do not depend on padding after it.
    """
    check_mode(mode, pooling)
    layers = check_layers(model, layers)
    names = [resid_post(layer) for layer in layers]
    inputs = [mention_input(tokenizer, mention, mode) for mention in mentions]
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][0]))
    hidden = model.config.get_text_config().hidden_size
    result = torch.zeros(len(inputs), len(layers), hidden)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"representations ({mode}, {pooling})", disable=not progress, leave=False):
        rows = order[start : start + batch_size]
        length = max(len(inputs[i][0]) for i in rows)
        input_ids = torch.full((len(rows), length), pad)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        weights = torch.zeros(len(rows), length)  # how each position counts in the pooled representation
        for row, index in enumerate(rows):
            ids, positions = inputs[index]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            chosen = positions[-1:] if pooling == "last" else positions
            weights[row, chosen] = 1.0 / len(chosen)
        cache = run_with_cache(
            model,
            names,
            input_ids,
            attention_mask,
            select=lambda activation, weights=weights: torch.einsum("bl,bld->bd", weights, activation.float()),
        )
        result[rows] = torch.stack([cache[name] for name in names], dim=1)
    return result
