"""The masked cross-encoder of the MICE paper: per-layer attention masks on a standard cross-encoder.

Vast, Morand et al. (MICE, arXiv 2602.16299, §3) derive MICE from a full cross-encoder by removing attention paths one
group of tokens at a time and checking what that costs. This module reproduces that study on any HF
sequence-classification model of a supported family, without retraining or changing its weights: the jointly
tokenized pair ``[CLS] q [SEP] d [SEP]`` is split into token groups and each layer gets its own attention mask
built from rules "tokens of group A may not attend to tokens of group B in layers [start, end)".

Token groups (found from the separator positions, as the paper's ``build_lookup_matrix_core`` does):

- ``cls``: the first real token;
- ``query``: the tokens before the first separator;
- ``sep_1``: the separators between query and document. BERT/ELECTRA have one; RoBERTa's ``<s> q </s></s> d </s>``
  has two, and both belong to ``sep_1`` (decision: they play the role of BERT's single ``[SEP]``, so every rule that
  names ``sep_1`` applies to both, and "sep_1 attends only to itself" lets the pair attend to each other);
- ``document``: the tokens between ``sep_1`` and the last separator;
- ``sep_2``: the last real token, the closing separator;
- padding (no group): never attended to. A padding row keeps attending to the real tokens so that no softmax row is
  empty; its output is never read.

The same detection handles a MICE-style concatenation ``[CLS] q [SEP] [CLS] d [SEP]`` (each half tokenized alone):
the document's own ``[CLS]`` then counts as a ``document`` token. Explicit ``position_ids`` and ``token_type_ids`` are
passed through to the model, so the document half can restart its positions as if it were encoded alone.

Presets (each adds to the one before, as in the paper's ``masking_steps/bm25_minilm_step*.yaml``):

- ``mask0`` removes attention sinks: only ``cls`` attends to ``cls``; ``query`` does not attend to ``sep_2``;
  ``document`` does not attend to ``sep_1``; ``sep_1`` and ``sep_2`` attend only to themselves;
- ``mask1`` adds: ``cls`` does not attend to ``document`` or ``sep_2``;
- ``mask2`` adds: ``document`` does not attend to ``query`` (documents are encoded independently of the query);
- ``mask3-l{k}`` adds: ``query`` does not attend to ``document`` in layers ``0..k-1`` (the mid-fusion point);
- ``separate-l{k}`` (not cumulative; the paper's PreTTR reproduction): ``{cls, query, sep_1}`` and
  ``{document, sep_2}`` do not attend to each other in layers ``0..k-1``. With a MICE-style input this is exactly
  what MICE's lower layers compute;
- ``none``: no rule (the unmasked model).

Example::

    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    masked = MaskedCrossEncoder(model, "mask3-l4", tokenizer=tokenizer)
    logits = masked(**tokenizer(queries, documents, padding=True, return_tensors="pt")).logits

The masks are applied by replacing, for the duration of one forward call, the attention mask that each
self-attention module receives; weights are untouched. Eager and SDPA attention are supported (float or boolean
masks); FlashAttention and flex attention take no dense per-layer mask and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

GROUPS = ("cls", "query", "sep_1", "document", "sep_2")
PAD_GROUP = len(GROUPS)
"""Group index of padding tokens in the tensors returned by `token_groups`."""

# model_type -> (path of the layer list in the base model, path of the self-attention module in a layer)
_FAMILY_LAYOUT = {
    "bert": ("encoder.layer", "attention.self"),
    "roberta": ("encoder.layer", "attention.self"),
    "xlm-roberta": ("encoder.layer", "attention.self"),
    "electra": ("encoder.layer", "attention.self"),
    "modernbert": ("layers", "attn"),
}
_DENSE_MASK_BACKENDS = ("eager", "sdpa")


@dataclass(frozen=True)
class AttentionRule:
    """Tokens of the ``source`` groups may not attend to tokens of the ``target`` groups in layers
    ``[start_layer, end_layer)`` (``end_layer=None``: up to the last layer)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    start_layer: int = 0
    end_layer: int | None = None

    def __post_init__(self) -> None:
        for name in (*self.source, *self.target):
            if name not in GROUPS:
                raise ValueError(f"unknown token group {name!r} in {self}; the groups are {GROUPS}")
        if not self.source or not self.target:
            raise ValueError(f"{self} names no source or no target group")
        if self.start_layer < 0 or (self.end_layer is not None and self.end_layer <= self.start_layer):
            raise ValueError(f"{self} has an empty or negative layer range; use 0 <= start_layer < end_layer")


_MASK0 = (
    AttentionRule(("query", "sep_1", "document", "sep_2"), ("cls",)),
    AttentionRule(("query",), ("sep_2",)),
    AttentionRule(("document",), ("sep_1",)),
    AttentionRule(("sep_1",), ("cls", "query", "document", "sep_2")),
    AttentionRule(("sep_2",), ("cls", "query", "sep_1", "document")),
)
_MASK1 = (*_MASK0, AttentionRule(("cls",), ("document", "sep_2")))
_MASK2 = (*_MASK1, AttentionRule(("document",), ("query",)))
_QUERY_SIDE = ("cls", "query", "sep_1")
_DOCUMENT_SIDE = ("document", "sep_2")


def mask_rules(name: str) -> tuple[AttentionRule, ...]:
    """The rules of a named preset: ``none``, ``mask0``, ``mask1``, ``mask2``, ``mask3-l{k}``, ``separate-l{k}``."""
    key = name.lower().replace("_", "-")
    fixed = {"none": (), "mask0": _MASK0, "mask1": _MASK1, "mask2": _MASK2}
    if key in fixed:
        return fixed[key]
    preset, _, layer = key.rpartition("-l")
    if preset == "mask3" and layer.isdigit():
        return (*_MASK2, AttentionRule(("query",), ("document",), 0, int(layer)))
    if preset == "separate" and layer.isdigit():
        fusion = int(layer)
        return (
            AttentionRule(_QUERY_SIDE, _DOCUMENT_SIDE, 0, fusion),
            AttentionRule(_DOCUMENT_SIDE, _QUERY_SIDE, 0, fusion),
        )
    raise ValueError(
        f"unknown mask preset {name!r}; use one of none, mask0, mask1, mask2, mask3-l<k>, separate-l<k> "
        "(k = first layer, 0-based, in which query and document interact) or pass a list of AttentionRule"
    )


def _as_rules(rules: str | Sequence[AttentionRule]) -> tuple[AttentionRule, ...]:
    if isinstance(rules, str):
        return mask_rules(rules)
    rules = tuple(rules)
    for rule in rules:
        if not isinstance(rule, AttentionRule):
            raise TypeError(f"expected a preset name or AttentionRule objects, got {rule!r}")
    return rules


def group_attention_table(rules: str | Sequence[AttentionRule], num_layers: int) -> torch.Tensor:
    """Boolean table ``(num_layers, 6, 6)``: entry ``[layer, a, b]`` says whether group ``a`` may attend to group
    ``b`` in that layer (index 5 is padding: never attended to; padding rows attend to every real group)."""
    table = torch.ones(num_layers, PAD_GROUP + 1, PAD_GROUP + 1, dtype=torch.bool)
    table[:, :, PAD_GROUP] = False
    for rule in _as_rules(rules):
        end = num_layers if rule.end_layer is None else rule.end_layer
        if end > num_layers:
            raise ValueError(f"{rule} reaches layer {end - 1} but the model has {num_layers} layers")
        sources = [GROUPS.index(name) for name in rule.source]
        targets = [GROUPS.index(name) for name in rule.target]
        table[rule.start_layer : end, torch.tensor(sources)[:, None], torch.tensor(targets)[None, :]] = False
    return table


def token_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, sep_token_id: int) -> torch.Tensor:
    """Group index (into `GROUPS`, `PAD_GROUP` for padding) of every token of jointly tokenized pairs ``(B, L)``.

    Each row must read ``first q SEP.. d SEP`` over its real tokens: the separators other than the closing one must
    be adjacent (one for BERT, ``</s></s>`` for RoBERTa), and the last real token must be a separator.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_sep = (input_ids == sep_token_id) & real
    real_rank = real.long().cumsum(1)  # 1 for the first real token
    num_real = real_rank[:, -1:]
    num_sep = is_sep.long().sum(1, keepdim=True)
    sep_before = is_sep.long().cumsum(1) - is_sep.long()  # separators strictly before each token
    is_last = real & (real_rank == num_real)
    first_sep_rank = torch.where(is_sep, real_rank, torch.full_like(real_rank, input_ids.shape[1] + 1)).amin(1)
    middle = is_sep & ~is_last
    middle_contiguous = (torch.where(middle, real_rank, 0).amax(1) - first_sep_rank + 1) == (num_sep[:, 0] - 1)
    valid = (num_sep[:, 0] >= 2) & (is_last & is_sep).any(1) & middle_contiguous & (num_real[:, 0] >= 3)
    if not bool(valid.all()):
        row = int((~valid).nonzero()[0, 0])
        raise ValueError(
            f"row {row} is not a jointly tokenized (query, document) pair: expected [CLS] q [SEP] d [SEP] "
            f"(RoBERTa: <s> q </s></s> d </s>) with separator id {sep_token_id}, got ids {input_ids[row].tolist()}. "
            "Tokenize as tokenizer(queries, documents), or pass groups= explicitly."
        )
    groups = torch.full_like(input_ids, PAD_GROUP)
    groups[real & (sep_before == 0)] = GROUPS.index("query")
    groups[real & (sep_before > 0)] = GROUPS.index("document")
    groups[middle] = GROUPS.index("sep_1")
    groups[is_last] = GROUPS.index("sep_2")
    groups[real & (real_rank == 1)] = GROUPS.index("cls")
    return groups


def layer_attention_masks(
    groups: torch.Tensor, rules: str | Sequence[AttentionRule], num_layers: int
) -> list[torch.Tensor]:
    """One boolean matrix ``(B, L, L)`` per layer, ``True`` where token ``i`` (row) may attend to token ``j``.

    Raises if a rule set leaves a real token with nothing to attend to (its softmax would be undefined).
    """
    table = group_attention_table(rules, num_layers)
    masks = []
    for layer, allowed in enumerate(table):
        mask = allowed[groups[:, :, None], groups[:, None, :]]
        empty = ~mask.any(-1) & (groups != PAD_GROUP)
        if bool(empty.any()):
            batch, position = (int(i) for i in empty.nonzero()[0])
            group = GROUPS[int(groups[batch, position])]
            raise ValueError(f"the rules leave group {group!r} with nothing to attend to in layer {layer}")
        masks.append(mask)
    return masks


def _submodule(module: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        module = getattr(module, name)
    return module


class MaskedCrossEncoder(nn.Module):
    """A sequence-classification model scored with per-layer attention masks (Mask0-Mask3 of the MICE paper).

    Args:
        model: an HF ``*ForSequenceClassification`` model (BERT, RoBERTa, XLM-R, ELECTRA, ModernBERT) using eager or
            SDPA attention. It is used as is (not copied); call ``.eval()`` on it for scoring.
        rules: a preset name (see `mask_rules`) or a sequence of `AttentionRule`.
        tokenizer: gives the separator id; or pass ``sep_token_id``.
        sep_token_id: the separator token id, when no tokenizer is given.

    ``forward`` takes the model's usual inputs (``input_ids``, ``attention_mask``, ``token_type_ids``,
    ``position_ids``, ...) plus optional ``groups`` (``(B, L)`` indices into `GROUPS`, `PAD_GROUP` for padding) to
    override the detection, and returns the model's own output (``.logits``, and ``.hidden_states`` when
    ``output_hidden_states=True``).
    """

    def __init__(
        self,
        model: nn.Module,
        rules: str | Sequence[AttentionRule],
        tokenizer=None,
        sep_token_id: int | None = None,
    ) -> None:
        super().__init__()
        config = model.config
        if config.model_type not in _FAMILY_LAYOUT:
            raise ValueError(
                f"MaskedCrossEncoder supports the families {sorted(_FAMILY_LAYOUT)}, not {config.model_type!r}"
            )
        backend = config._attn_implementation
        if backend not in _DENSE_MASK_BACKENDS:
            raise ValueError(
                f"attention backend {backend!r} takes no dense per-layer mask; load the model with "
                "attn_implementation='sdpa' or 'eager'"
            )
        if sep_token_id is None:
            sep_token_id = getattr(tokenizer, "sep_token_id", None)
        if sep_token_id is None:
            raise ValueError("give the tokenizer (or sep_token_id=) so that the separators can be found")
        self.model = model
        self.sep_token_id = int(sep_token_id)
        self.rules = _as_rules(rules)
        layers_path, attention_path = _FAMILY_LAYOUT[config.model_type]
        layers = _submodule(model.base_model, layers_path)
        self._attention_modules = [_submodule(layer, attention_path) for layer in layers]
        self.group_table = group_attention_table(self.rules, len(self._attention_modules))

    @property
    def num_layers(self) -> int:
        return len(self._attention_modules)

    def layer_masks(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, groups: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The boolean ``(B, L, L)`` matrix of each layer (``True``: may attend) for these inputs."""
        if groups is None:
            groups = token_groups(input_ids, attention_mask, self.sep_token_id)
        return layer_attention_masks(groups, self.rules, self.num_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
        **model_inputs,
    ):
        masks = self.layer_masks(input_ids, attention_mask, groups)
        handles = [
            module.register_forward_pre_hook(_MaskReplacer(mask), with_kwargs=True)
            for module, mask in zip(self._attention_modules, masks, strict=True)
        ]
        try:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **model_inputs)
        finally:
            for handle in handles:
                handle.remove()


class _MaskReplacer:
    """Forward pre-hook: combine the mask the model built for a layer (padding, sliding window) with the layer's
    rule mask, in the model's own mask format (additive float, or boolean for SDPA)."""

    def __init__(self, allowed: torch.Tensor) -> None:
        self.allowed = allowed[:, None]  # (B, 1, L, L): same for every head

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        incoming = kwargs.get("attention_mask")
        allowed = self.allowed.to(args[0].device)
        if incoming is not None:
            model_allowed = incoming if incoming.dtype == torch.bool else incoming > torch.finfo(incoming.dtype).min
            allowed = allowed & model_allowed
        if module.config._attn_implementation == "sdpa" and (incoming is None or incoming.dtype == torch.bool):
            kwargs["attention_mask"] = allowed
        else:
            dtype = incoming.dtype if incoming is not None and incoming.is_floating_point() else args[0].dtype
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            kwargs["attention_mask"] = torch.where(allowed, zero, torch.finfo(dtype).min)
        return args, kwargs


def score_with_mask(
    model: nn.Module, inputs: dict, rules: str | Sequence[AttentionRule], tokenizer=None, sep_token_id=None
) -> torch.Tensor:
    """Logits ``(B, num_labels)`` of ``model`` on tokenized pairs ``inputs`` under the mask ``rules``."""
    return MaskedCrossEncoder(model, rules, tokenizer=tokenizer, sep_token_id=sep_token_id)(**inputs).logits
