"""Named hook points of a Hugging Face causal LM, with TransformerLens' names.

- `hook_embed`: the residual stream entering block 0, i.e. the output of `model.get_input_embeddings()` (for Gemma
  it includes the sqrt(d_model) scale). It is exactly what `inputs_embeds` replaces in every transformers causal LM,
  so writing a vector at a position of `hook_embed` is done by editing `inputs_embeds` (`embed`).
- `blocks.{layer}.hook_resid_post`: the residual stream after decoder block `layer` (0-based), read with a forward
  hook on the block. For the last block it is the stream *before* the final norm, as in TransformerLens;
  `output_hidden_states` would give the normed stream there, which does not compare with the other layers.

Plain transformers forward hooks rather than TransformerLens: the lens then works on any causal LM transformers can
load (GGUF-dequantised ones included), with transformers' own numerics and `generate()`, and needs no extra
dependency or weight conversion.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel

from .errors import EntityLensError

HOOK_EMBED = "hook_embed"
RESID_POST = "blocks.{layer}.hook_resid_post"
_RESID_POST_PATTERN = re.compile(r"blocks\.(\d+)\.hook_resid_post")

# fn(activation, hook_name) -> a replacement activation, or None to leave it unchanged.
HookFunction = Callable[[torch.Tensor, str], torch.Tensor | None]


class _StopForward(Exception):
    """Raised by the last hook a cached run needs: the blocks above it (and the LM head) need not run."""


def resid_post(layer: int) -> str:
    """The hook name of the residual stream after block `layer`: `blocks.{layer}.hook_resid_post`."""
    return RESID_POST.format(layer=layer)


def num_layers(model: PreTrainedModel) -> int:
    return len(decoder_blocks(model))


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The model's decoder blocks, in order: the first `ModuleList` under the base model with one entry per layer
    (`model.layers` in Llama and Gemma, `transformer.h` in GPT-2, ...)."""
    expected = model.config.get_text_config().num_hidden_layers
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == expected:
            return module
    raise EntityLensError(
        f"cannot find the {expected} decoder blocks of {type(model).__name__} (no ModuleList of that length under its "
        "base model): this architecture is not supported by the Entity Lens"
    )


def check_layers(model: PreTrainedModel, layers: Sequence[int]) -> list[int]:
    """`layers` as a list, or an `EntityLensError` naming the first one outside the model."""
    count = num_layers(model)
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < count:
            raise EntityLensError(
                f"layer {layer!r} is outside the model: {type(model).__name__} has {count} blocks, choose layers "
                f"from 0 to {count - 1}"
            )
    return list(layers)


def hook_module(model: PreTrainedModel, name: str) -> nn.Module:
    """The module whose output is the activation named `name`."""
    if name == HOOK_EMBED:
        return model.get_input_embeddings()
    match = _RESID_POST_PATTERN.fullmatch(name)
    if not match:
        raise EntityLensError(f"unknown hook point {name!r}: use {HOOK_EMBED!r} or {RESID_POST!r}")
    (layer,) = check_layers(model, [int(match[1])])
    return decoder_blocks(model)[layer]


@contextmanager
def hooks(model: PreTrainedModel, fwd_hooks: Sequence[tuple[str, HookFunction]]) -> Iterator[None]:
    """Run the model with `fwd_hooks` (TransformerLens' `run_with_hooks` as a context manager): each function sees
    the named activation and may return a replacement. Decoder blocks that return a tuple are handled."""

    def wrap(name: str, function: HookFunction):
        def hook(module, inputs, output):
            activation = output[0] if isinstance(output, tuple) else output
            replaced = function(activation, name)
            if replaced is None:
                return None
            return (replaced, *output[1:]) if isinstance(output, tuple) else replaced

        return hook

    handles = [hook_module(model, name).register_forward_hook(wrap(name, fn)) for name, fn in fwd_hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def run_with_cache(
    model: PreTrainedModel,
    names: Sequence[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    select: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The activations named `names` for `input_ids` (TransformerLens' `run_with_cache`), each passed through
    `select` (e.g. gathering the entity's positions) to keep memory small.

    Only the base model runs, and it stops after the deepest block asked for: no LM head, no block above it.
    """
    select = select or (lambda activation: activation)
    cache: dict[str, torch.Tensor] = {}
    deepest = max(names, key=_depth)

    def store(activation: torch.Tensor, name: str) -> None:
        cache[name] = select(activation.detach())
        if name == deepest:
            raise _StopForward

    with hooks(model, [(name, store) for name in names]):
        try:
            model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
    return {name: cache[name] for name in names}


def embed(model: PreTrainedModel, input_ids: torch.Tensor, replace: dict[int, torch.Tensor]) -> torch.Tensor:
    """`hook_embed` for `input_ids` (batch, length), with the vectors at the columns of `replace` written over the
    token embeddings: `{column: (batch, d_model) or (d_model,)}`. The result goes to the model as `inputs_embeds`
    and keeps the gradient of the written vectors."""
    embeddings = model.get_input_embeddings()(input_ids).detach()
    batch = input_ids.shape[0]
    pieces = [
        replace[column].to(embeddings.dtype).expand(batch, -1) if column in replace else embeddings[:, column]
        for column in range(input_ids.shape[1])
    ]
    return torch.stack(pieces, dim=1)


def _depth(name: str) -> int:
    match = _RESID_POST_PATTERN.fullmatch(name)
    return int(match[1]) if match else -1
