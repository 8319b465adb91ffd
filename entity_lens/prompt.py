"""The decoding prompt `<bos> [context] _ >`, the mention it is trained to produce, and the forward pass over it.

The embedding of `_` is replaced by the entity's representation and the embedding of `>` by the task vector v
(`hooks.embed` writes them into `hook_embed`). A mention is the text the model writes after `_ > `: its tokens are
those of `"_ > " + mention` after the two prompt tokens (so the mention starts with the model's word-initial
tokens, as in running text), followed by the end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import EntityLensError
from .hooks import embed

PROMPT = "_ >"
IGNORE = -100


@dataclass
class MentionSet:
    """What a task vector is trained or evaluated on: one representation per example, the token ids to decode from
    it (mention tokens + EOS), and optionally a context text placed before `_ >` in the decoding prompt."""

    representations: torch.Tensor  # (N, d_model)
    targets: list[list[int]]
    contexts: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.representations) != len(self.targets):
            raise EntityLensError(
                f"{len(self.representations)} representations for {len(self.targets)} targets: they must pair up"
            )

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, indices: Sequence[int]) -> MentionSet:
        indices = list(indices)
        contexts = [self.contexts[i] for i in indices] if self.contexts is not None else None
        return MentionSet(self.representations[indices], [self.targets[i] for i in indices], contexts)


@dataclass
class PromptBatch:
    """Prompts left-padded so that `_` and `>` sit in the same two columns of every row, then the targets (when
    training) right-padded. `labels[:, t]` is the token the logits at column t must predict (IGNORE elsewhere)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    representation_column: int
    task_vector_column: int
    labels: torch.Tensor | None = None


def prompt_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids of `_` and `>`; an `EntityLensError` if the tokenizer does not give exactly two tokens."""
    ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    if len(ids) != 2:
        raise EntityLensError(
            f"the tokenizer splits {PROMPT!r} into {len(ids)} tokens, not 2: the decoding prompt needs `_` and `>` "
            "as one token each"
        )
    return ids


def prompt_ids(tokenizer: PreTrainedTokenizerBase, context: str | None = None) -> list[int]:
    """`<bos> [context] _ >` as token ids (no BOS when the tokenizer has none)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    context_ids = tokenizer(context, add_special_tokens=False).input_ids if context else []
    return bos + context_ids + prompt_tokens(tokenizer)


def mention_ids(tokenizer: PreTrainedTokenizerBase, mention: str) -> list[int]:
    """The tokens the model must write for `mention` after `_ >`: its word-initial tokens, then EOS."""
    if not mention.strip():
        raise EntityLensError(f"the mention {mention!r} maps to no token: give a non-empty entity mention")
    ids = tokenizer(f"{PROMPT} {mention.strip()}", add_special_tokens=False).input_ids
    prompt = prompt_tokens(tokenizer)
    if ids[: len(prompt)] != prompt or len(ids) == len(prompt):
        raise EntityLensError(f"the mention {mention!r} merges with the prompt {PROMPT!r} when tokenized")
    return ids[len(prompt) :] + [tokenizer.eos_token_id]


def build_batch(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]] | None = None,
) -> PromptBatch:
    """Pad prompts (and targets) into one batch; see `PromptBatch`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_length = max(len(p) for p in prompts)
    target_length = max((len(t) for t in targets), default=0) if targets is not None else 0
    rows, masks, labels = [], [], []
    for index, prompt in enumerate(prompts):
        target = list(targets[index]) if targets is not None else []
        left = prompt_length - len(prompt)
        right = target_length - len(target)
        rows.append([pad] * left + list(prompt) + target + [pad] * right)
        masks.append([0] * left + [1] * (len(prompt) + len(target)) + [0] * right)
        # Column prompt_length - 1 (`>`) predicts the first target token, and so on.
        row_labels = [IGNORE] * (prompt_length + target_length)
        row_labels[prompt_length - 1 : prompt_length - 1 + len(target)] = target
        labels.append(row_labels)
    attention_mask = torch.tensor(masks)
    return PromptBatch(
        input_ids=torch.tensor(rows),
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        representation_column=prompt_length - 2,
        task_vector_column=prompt_length - 1,
        labels=torch.tensor(labels) if targets is not None else None,
    )


def inputs_embeds(
    model: PreTrainedModel, batch: PromptBatch, representations: torch.Tensor, task_vectors: torch.Tensor
) -> torch.Tensor:
    """`hook_embed` of the batch with the representations at `_` and the task vector(s) at `>`."""
    return embed(
        model,
        batch.input_ids,
        {batch.representation_column: representations, batch.task_vector_column: task_vectors},
    )


def output_logits(model: PreTrainedModel, hidden_states: torch.Tensor) -> torch.Tensor:
    """The LM head on final hidden states, with the final logit soft-capping of the models that have one (Gemma 2),
    exactly as the model's own forward computes its logits."""
    logits = model.get_output_embeddings()(hidden_states)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def target_logits(
    model: PreTrainedModel, batch: PromptBatch, representations: torch.Tensor, task_vectors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the labelled columns only, (targets, vocab), and their labels.

    The LM head runs on those positions alone: with Gemma's 262k-token vocabulary it would otherwise cost more than
    the whole model on a short prompt.
    """
    hidden = model.base_model(
        inputs_embeds=inputs_embeds(model, batch, representations, task_vectors),
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).last_hidden_state
    labelled = batch.labels != IGNORE
    return output_logits(model, hidden[labelled]), batch.labels[labelled]


def mention_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the mention tokens and EOS, averaged over tokens."""
    return F.cross_entropy(logits, labels)
