"""Greedy decoding of mentions from representations: the prompt `<bos> [context] _ >` with the representation at
`_` and v at `>`, then transformers' `generate` (greedy, one beam) until EOS or `max_new_tokens`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from .prompt import build_batch, inputs_embeds, prompt_ids

MAX_NEW_TOKENS = 20


@dataclass
class DecodedMention:
    mention: str  # the decoded text, stripped, without EOS
    token_ids: list[int]  # the generated tokens before EOS
    ended: bool  # whether the model wrote EOS (else it stopped at max_new_tokens)


@torch.no_grad()
def decode_mentions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    representations: torch.Tensor,
    task_vectors: torch.Tensor,
    contexts: Sequence[str] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 64,
    progress: bool = False,
) -> list[DecodedMention]:
    """Decode one mention per representation (N, d). `task_vectors` is one v (d,) for all, or one per row (N, d),
    already paired with representations that went through the task vector's map (`TaskVector.transform`)."""
    count = len(representations)
    task_vectors = task_vectors.expand(count, -1) if task_vectors.dim() == 1 else task_vectors
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generation = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        bos_token_id=tokenizer.bos_token_id,
    )
    decoded: list[DecodedMention] = []
    for start in tqdm(range(0, count, batch_size), desc="decoding", disable=not progress, leave=False):
        rows = range(start, min(start + batch_size, count))
        prompts = [prompt_ids(tokenizer, contexts[i] if contexts is not None else None) for i in rows]
        batch = build_batch(tokenizer, prompts)
        embeds = inputs_embeds(model, batch, representations[start : rows.stop], task_vectors[start : rows.stop])
        generated = model.generate(
            inputs_embeds=embeds, attention_mask=batch.attention_mask, generation_config=generation
        )
        decoded.extend(_cut_at_eos(tokenizer, sequence.tolist()) for sequence in generated)
    return decoded


def _cut_at_eos(tokenizer: PreTrainedTokenizerBase, tokens: list[int]) -> DecodedMention:
    ended = tokenizer.eos_token_id in tokens
    kept = tokens[: tokens.index(tokenizer.eos_token_id)] if ended else tokens
    return DecodedMention(tokenizer.decode(kept, skip_special_tokens=True).strip(), kept, ended)
