"""MICE: Minimal Interaction Cross-Encoders, on BERT, RoBERTa, ELECTRA, MPNet, DeBERTa-v2/v3 and ModernBERT encoders.

MICE-ℓk+m (Vast, Morand et al., arXiv 2602.16299) keeps the first `k + m` layers of an encoder:

* layers `0..k-1` (the backbone, the family's own transformers model truncated to `k` layers) encode the query
  `[CLS] q [SEP]` and the document `[CLS] d [SEP]` independently, each with positions as if tokenized alone, so
  documents can be encoded once and cached (`encode_documents`);
* layers `k..k+m-1` (interaction layers, the family's own layer modules) update only the query tokens: self-attention
  over the query (with the layer's own weights and position scheme; query tokens may not attend to the query [CLS]),
  then cross-attention to the frozen document states output by layer `k-1` (a separate module per layer, seeded from
  that layer's self-attention weights; the query [CLS] may not cross-attend), then the layer's feed-forward block;
* the family's own classification head reads the query [CLS] (or the mean of the query tokens).

Cross-attention is content-only: documents and queries have independent position schemes, so there is no relative or
rotary position term between a query token and a document token (MPNet, DeBERTa and ModernBERT keep their position
terms in the query self-attention). ModernBERT applies each interaction layer's `attn_norm` to the document states and
the query, as in the paper's Ettin models. A query token with no allowed document key (the [CLS] under
`mask_cls_to_doc`, padding) gets an exactly zero cross-attention context, not a uniform average or NaN.

Attention: every self- and cross-attention goes through transformers' attention interface (`ALL_ATTENTION_FUNCTIONS`,
masks from `transformers.masking_utils`), so `attn_implementation` "eager", "sdpa" or "flex_attention" reaches every
layer. MPNet and DeBERTa compute their self-attention in their own transformers code (relative position terms), so
MICE on them runs eager only. Flash-attention is not offered (see `MicePreTrainedModel`).

Scores are raw logits `(batch, num_labels)`; no activation is applied inside the model. This file and
`configuration_mice.py` depend only on torch and transformers, so they travel to the Hub as remote code.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.masking_utils import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    and_masks,
    bidirectional_mask_function,
    sliding_window_bidirectional_overlay,
)
from transformers.modeling_outputs import ModelOutput, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.bert.modeling_bert import BertAttention, BertLayer, eager_attention_forward
from transformers.models.deberta_v2.modeling_deberta_v2 import ContextPooler, DebertaV2Attention, DebertaV2Layer
from transformers.models.electra.modeling_electra import ElectraAttention, ElectraClassificationHead, ElectraLayer
from transformers.models.modernbert.modeling_modernbert import (
    ModernBertAttention,
    ModernBertEncoderLayer,
    ModernBertPredictionHead,
    ModernBertRotaryEmbedding,
)
from transformers.models.mpnet.modeling_mpnet import MPNetAttention, MPNetClassificationHead, MPNetLayer
from transformers.models.roberta.modeling_roberta import RobertaAttention, RobertaClassificationHead, RobertaLayer
from transformers.utils import logging

from .configuration_mice import MiceConfig
from .passages import tokenize_passages

logger = logging.get_logger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# Outputs and the document cache
# ----------------------------------------------------------------------------------------------------------------------


class _DocumentTensors:
    """Per-token tensors of right-padded documents: `values (N, Ld, D)` (the first field) and `attention_mask (N, Ld)`.

    Index them (`x[3]`, `x[[0, 5]]`, `x[2:10]`), join several with `concatenate`, move them with `.to(device)`.
    """

    attention_mask: torch.Tensor

    @property
    def values(self) -> torch.Tensor:
        return getattr(self, fields(self)[0].name)

    def __post_init__(self):
        name = fields(self)[0].name
        if self.values.dim() != 3 or self.attention_mask.dim() != 2:
            raise ValueError(
                f"{type(self).__name__} needs {name} of shape (N, Ld, D) and attention_mask of shape (N, Ld); got "
                f"{tuple(self.values.shape)} and {tuple(self.attention_mask.shape)}."
            )
        if self.values.shape[:2] != self.attention_mask.shape:
            raise ValueError(
                f"{name} {tuple(self.values.shape)} and attention_mask {tuple(self.attention_mask.shape)} disagree on "
                "(N, Ld)."
            )

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index):
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return type(self)(self.values[index], self.attention_mask[index])

    def to(self, *args, **kwargs):
        """Move (or cast) the values like `torch.Tensor.to`; the mask keeps its integer dtype."""
        mask_args = [a for a in args if not isinstance(a, torch.dtype)]
        mask_kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
        return type(self)(self.values.to(*args, **kwargs), self.attention_mask.to(*mask_args, **mask_kwargs))

    @classmethod
    def concatenate(cls, parts: list):
        """Join documents encoded in different batches (right-padded to the longest)."""
        if not parts:
            raise ValueError(f"{cls.__name__}.concatenate needs at least one {cls.__name__}.")
        length = max(part.values.shape[1] for part in parts)
        values = [F.pad(part.values, (0, 0, 0, length - part.values.shape[1])) for part in parts]
        masks = [F.pad(part.attention_mask, (0, length - part.attention_mask.shape[1])) for part in parts]
        return cls(torch.cat(values), torch.cat(masks))


@dataclass
class MiceDocumentStates(_DocumentTensors):
    """Documents encoded by the independent layers, ready to be scored against any query.

    Attributes:
        hidden_states: `(N, Ld, H)` output of layer `fusion_layer - 1` for `[CLS] d [SEP]` (right-padded).
        attention_mask: `(N, Ld)` 1 for document tokens, 0 for padding.

    A plain container: index it (`states[3]`, `states[[0, 5]]`, `states[2:10]`), join several with
    `MiceDocumentStates.concatenate`, move it with `.to(device)`. It holds no position information because
    cross-attention is content-only.
    """

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class MiceDocumentKeyValues(_DocumentTensors):
    """Documents as the keys and values that every interaction layer's cross-attention reads: scoring them is
    query-side work only (no projection of the documents), at `2 * interaction_layers` times the storage of the
    states. Made by `document_key_values(states)` (or `encode_documents(..., key_values=True)`); same container
    behaviour as `MiceDocumentStates`, and scored the same way, exactly.

    Attributes:
        key_values: `(N, Ld, interaction_layers * 2 * H)`: per token, layer after layer, the key then the value
            projection (zeros at padding).
        attention_mask: `(N, Ld)` 1 for document tokens, 0 for padding.
    """

    key_values: torch.Tensor
    attention_mask: torch.Tensor

    def per_layer(self, hidden_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The `(N, Ld, H)` keys and values of each interaction layer, in order (views, no copy)."""
        if self.key_values.shape[-1] % (2 * hidden_size):
            raise ValueError(
                f"key_values of width {self.key_values.shape[-1]} are not keys and values of hidden size {hidden_size}: "
                "they were made by a different model"
            )
        chunks = self.key_values.split(hidden_size, dim=-1)
        return list(zip(chunks[0::2], chunks[1::2], strict=True))


@dataclass
class MiceModelOutput(ModelOutput):
    """Output of `MiceModel`.

    Attributes:
        last_hidden_state: `(N, Lq, H)` final states of the query tokens, one row per (query, document) pair.
        attention_mask: `(N, Lq)` the query mask of each pair.
        cross_attentions: with `output_attentions=True`, one `(N, heads, Lq, Ld)` tensor per interaction layer: the
            attention of each query token over the document tokens (rows of masked query tokens are zero).
        hidden_states: with `output_hidden_states=True`, the query states entering the interaction layers (output of
            layer `fusion_layer - 1`, `(N, Lq, H)`) followed by the output of each interaction layer, the last one
            equal to `last_hidden_state` (so `(N, 1, H)` when only the [CLS] row of the last layer is computed).
    """

    last_hidden_state: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MiceSequenceClassifierOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` (`logits` are raw scores) plus the `cross_attentions` of the interaction layers."""

    cross_attentions: tuple[torch.Tensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Attention helpers
# ----------------------------------------------------------------------------------------------------------------------


def _only_cls_sees_cls(batch_idx, head_idx, q_idx, kv_idx):
    """`mask_query_to_cls` as a transformers mask function: the query [CLS] is a key for itself only."""
    return (kv_idx != 0) | (q_idx == 0)


def _attention_mask(
    implementation: str,
    key_valid: torch.Tensor,
    query_length: int,
    dtype: torch.dtype,
    *overlays,
    materialize: bool = False,
):
    """The `(B, 1, Lq, Lk)` mask of the keys `key_valid (B, Lk)` and the index-based mask functions `overlays`, in
    the form the attention backend takes (additive for eager, boolean for sdpa, a `BlockMask` for flex), built by
    transformers' mask interface; `None` where nothing is masked, unless `materialize`.

    (`create_bidirectional_mask` builds the same, but turns to `vmap` for any extra mask function, which costs more
    than the attention itself on short queries; these overlays are plain index arithmetic, so they broadcast.)
    """
    return ALL_MASK_ATTENTION_FUNCTIONS[implementation](
        batch_size=key_valid.shape[0],
        q_length=query_length,
        kv_length=key_valid.shape[1],
        mask_function=and_masks(bidirectional_mask_function, *overlays),
        attention_mask=key_valid,
        dtype=dtype,
        allow_is_causal_skip=False,
        allow_is_bidirectional_skip=not (overlays or materialize),
        use_vmap=False,
        device=key_valid.device,
    )


def _query_mask(
    config: MiceConfig,
    hidden: torch.Tensor,
    query_valid: torch.Tensor,
    sliding: bool = False,
    materialize: bool = False,
):
    """The query self-attention mask of the interaction layers for the configured backend: the query's padding and,
    under `mask_query_to_cls`, no query token but the [CLS] itself attending to the [CLS]; `sliding` adds the
    encoder's local window (ModernBERT)."""
    encoder = config.encoder_config
    overlays = [_only_cls_sees_cls] if config.mask_query_to_cls else []
    if sliding:
        overlays.append(sliding_window_bidirectional_overlay(encoder.sliding_window))
    return _attention_mask(
        encoder._attn_implementation, query_valid, hidden.shape[1], hidden.dtype, *overlays, materialize=materialize
    )


def _repeat_rows(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """Each row `times` times in a row (`repeat_interleave` on dim 0, as a broadcast that tracing keeps symbolic)."""
    return tensor.unsqueeze(1).expand(-1, times, *tensor.shape[1:]).flatten(0, 1)


def _split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    return states.view(*states.shape[:2], heads, -1).transpose(1, 2)


class _Tokens:
    """The valid tokens of a right-padded `(B, L, ...)` batch, to run per-token modules on them and not on padding.

    Padding is most of a batch's tokens where lengths vary: documents cut at 96 tokens average ~70 in a batch padded
    to 96, and queries far less than their batch's longest.
    """

    def __init__(self, valid: torch.Tensor):
        self.valid = valid
        self.shape = valid.shape
        self.index = valid.reshape(-1).nonzero().squeeze(1)

    def pack(self, states: torch.Tensor) -> torch.Tensor:
        """`(B, L, H)` -> `(T, H)`: the valid tokens only."""
        return states.reshape(-1, states.shape[-1]).index_select(0, self.index)

    def unpack(self, packed: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """`(T, H)` -> `(B, L, H)`, the padded positions taken from `padding` (zeros by default)."""
        if padding is None:
            flat = packed.new_zeros(self.shape.numel(), packed.shape[-1])
        else:
            flat = padding.reshape(-1, padding.shape[-1])
        return flat.index_copy(0, self.index, packed).view(*self.shape, -1)


class _AllTokens(_Tokens):
    """`_Tokens` that keeps the padding: per-token modules run on every position. The traceable form (no
    data-dependent shapes) that `torch.export` and ONNX need; same scores, as padding never reaches a valid token."""

    def __init__(self, valid: torch.Tensor):
        self.valid = valid
        self.shape = valid.shape

    def pack(self, states: torch.Tensor) -> torch.Tensor:
        return states

    def unpack(self, packed: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return packed


def _seed_from(target: nn.Module, source: nn.Module) -> None:
    """Copy every parameter of `target` from the parameter of the same name in `source` (self- to cross-attention)."""
    source_state = source.state_dict()
    missing = [name for name in target.state_dict() if name not in source_state]
    if missing:
        raise ValueError(f"cannot seed {type(target).__name__} from {type(source).__name__}: missing {missing}")
    target.load_state_dict({name: source_state[name] for name in target.state_dict()})


# ----------------------------------------------------------------------------------------------------------------------
# Encoder families: how MICE drives each transformers implementation
# ----------------------------------------------------------------------------------------------------------------------


class _EncoderFamily:
    """How MICE drives one family of transformers encoders (stateless; one subclass per family).

    Building: the family's base model class builds the independent layers (`backbone`), `build_layer` the
    interaction layers (the family's own layer module), `build_cross_attention` one cross-attention module per
    interaction layer whose parameter names are a subset of the layer's self-attention block (so it is seeded with a
    state-dict copy), and `build_head` the modules of the family's `XForSequenceClassification` head, under the same
    names (so a cross-encoder's head copies over).

    Running an interaction layer: `self_attention` (the layer's own block, over the query only), a content-only
    cross-attention of the query over the frozen document states (`cross_query`, `cross_key_value`,
    `cross_settings`, `cross_output`) and `feed_forward`. All but the self-attention act on each token alone.
    """

    layers_path = "encoder.layer"  # where the layers live inside the family's base model
    backbone_kwargs: dict = {}  # extra arguments of the family's base model class
    # Whether the family's transformers code computes self-attention through the attention interface
    # (`ALL_ATTENTION_FUNCTIONS`), so that sdpa and flex attention reach it; MPNet and DeBERTa compute it themselves.
    attention_interface = True

    def __init__(self, encoder_config):
        self.config = encoder_config

    # -- building ------------------------------------------------------------------------------------------------
    def build_backbone(self, model_class: type[PreTrainedModel], lower_config) -> PreTrainedModel:
        """The family's base model with the independent layers only (`lower_config`)."""
        return model_class(lower_config, **self.backbone_kwargs)

    def build_layer(self, config, index: int) -> nn.Module:
        raise NotImplementedError

    def build_cross_attention(self, config, index: int) -> nn.Module:
        raise NotImplementedError

    def self_attention_of(self, layer: nn.Module) -> nn.Module:
        return layer.attention

    def build_head(self, config) -> nn.ModuleDict:
        raise NotImplementedError

    # -- running -------------------------------------------------------------------------------------------------
    def lower(self, backbone, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    def prepare(self, model, hidden: torch.Tensor, query_valid: torch.Tensor) -> dict:
        """What the query self-attention of every interaction layer needs: the mask in the backend's form, positions."""
        return {"mask": _query_mask(model.config, hidden, query_valid)}

    def self_attention(self, layer, hidden, context) -> torch.Tensor:
        return layer.attention(hidden, attention_mask=context["mask"])[0]

    # Cross-attention has no position term in any family, so its projections act on each token alone: MICE runs them
    # on the valid tokens only (`_Tokens`), never on padding.
    def cross_query(self, layer, cross, hidden) -> torch.Tensor:
        """The cross-attention query projection of query states `(..., H)`."""
        raise NotImplementedError

    def cross_key_value(self, layer, cross, documents) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention key and value projections of document states `(..., H)`."""
        raise NotImplementedError

    def cross_settings(self, layer, cross) -> tuple[float, float, nn.Module]:
        """The cross-attention's scaling, its dropout probability and the module whose `training` flag rules it."""
        raise NotImplementedError

    def cross_output(self, layer, cross, context, hidden) -> torch.Tensor:
        return cross.output(context, hidden)

    def feed_forward(self, layer, hidden) -> torch.Tensor:
        return layer.output(layer.intermediate(hidden), hidden)

    def finalize(self, model, hidden) -> torch.Tensor:
        return hidden

    def classify(self, model, pooled: torch.Tensor) -> torch.Tensor:
        return model.classification_head["classifier"](pooled[:, None])


class _BertLikeFamily(_EncoderFamily):
    """RoBERTa and ELECTRA (and BERT below): post-norm layers, absolute positions, attention backend interface.

    The cross-attention module is the family's own `XAttention(config, is_cross_attention=True)`, whose parameter
    names equal the self-attention block's. RoBERTa position ids count from `pad_token_id + 1`, computed by the
    embeddings from each sequence alone.
    """

    def __init__(self, encoder_config):
        super().__init__(encoder_config)
        self.layer_class, self.attention_class, self.head_class = {
            "bert": (BertLayer, BertAttention, None),
            "roberta": (RobertaLayer, RobertaAttention, RobertaClassificationHead),
            "electra": (ElectraLayer, ElectraAttention, ElectraClassificationHead),
        }[encoder_config.model_type]
        if encoder_config.model_type == "roberta":
            self.backbone_kwargs = {"add_pooling_layer": False}

    def build_layer(self, config, index):
        return self.layer_class(config, layer_idx=index)

    def build_cross_attention(self, config, index):
        return self.attention_class(config, is_causal=False, layer_idx=index, is_cross_attention=True)

    def build_head(self, config):
        return nn.ModuleDict({"classifier": self.head_class(config)})

    def cross_query(self, layer, cross, hidden):
        return cross.self.query(hidden)

    def cross_key_value(self, layer, cross, documents):
        return cross.self.key(documents), cross.self.value(documents)

    def cross_settings(self, layer, cross):
        return cross.self.scaling, cross.self.dropout.p, cross.self


class _BertFamily(_BertLikeFamily):
    """BERT: the head is the base model's pooler (tanh dense on [CLS]), dropout and a linear layer."""

    backbone_kwargs = {"add_pooling_layer": True}  # BERT's pooler belongs to its base model and to its head

    def build_head(self, config):
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        return nn.ModuleDict(
            {"dropout": nn.Dropout(dropout), "classifier": nn.Linear(config.hidden_size, config.num_labels)}
        )

    def classify(self, model, pooled):
        head = model.classification_head
        return head["classifier"](head["dropout"](model.mice.backbone.pooler(pooled[:, None])))


class _MPNetFamily(_EncoderFamily):
    """MPNet: post-norm, absolute positions plus a relative position bias shared by all layers (eager only).

    The query self-attention adds the bias for the query's own positions; cross-attention has no position term.
    """

    backbone_kwargs = {"add_pooling_layer": False}
    attention_interface = False

    def build_layer(self, config, index):
        return MPNetLayer(config)

    def build_cross_attention(self, config, index):
        return MPNetAttention(config)

    def build_head(self, config):
        return nn.ModuleDict({"classifier": MPNetClassificationHead(config)})

    def prepare(self, model, hidden, query_valid):
        return {
            "mask": _query_mask(model.config, hidden, query_valid),
            "position_bias": model.backbone.encoder.compute_position_bias(hidden),
        }

    def self_attention(self, layer, hidden, context):
        return layer.attention(hidden, context["mask"], position_bias=context["position_bias"])[0]

    def cross_query(self, layer, cross, hidden):
        return cross.attn.q(hidden)

    def cross_key_value(self, layer, cross, documents):
        return cross.attn.k(documents), cross.attn.v(documents)

    def cross_settings(self, layer, cross):
        return cross.attn.attention_head_size**-0.5, cross.attn.dropout.p, cross.attn

    def cross_output(self, layer, cross, context, hidden):
        return cross.LayerNorm(cross.dropout(cross.attn.o(context)) + hidden)


class _DebertaV2Family(_EncoderFamily):
    """DeBERTa-v2 and v3: disentangled attention (content plus relative-position terms), eager only.

    The query self-attention keeps the layer's relative positions over the query alone. Cross-attention is the
    content-to-content term only (a `DebertaV2Attention` built without relative attention), scaled like the layer's
    self-attention (`1 / sqrt(head_dim * (1 + number of position terms))`) so that the seeded weights start on the
    scale they were trained for.
    """

    attention_interface = False

    def build_layer(self, config, index):
        return DebertaV2Layer(config)

    def build_cross_attention(self, config, index):
        content_only = copy.deepcopy(config)
        content_only.relative_attention = False
        return DebertaV2Attention(content_only)

    def build_head(self, config):
        dropout = getattr(config, "cls_dropout", None)
        return nn.ModuleDict(
            {
                "pooler": ContextPooler(config),
                "dropout": nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout),
                "classifier": nn.Linear(config.pooler_hidden_size, config.num_labels),
            }
        )

    def prepare(self, model, hidden, query_valid):
        encoder = model.backbone.encoder
        return {
            "mask": _query_mask(model.config, hidden, query_valid, materialize=True) == 0,  # DeBERTa: "may attend"
            "relative_pos": encoder.get_rel_pos(hidden),
            "rel_embeddings": encoder.get_rel_embedding(),
        }

    def self_attention(self, layer, hidden, context):
        return layer.attention(
            hidden, context["mask"], relative_pos=context["relative_pos"], rel_embeddings=context["rel_embeddings"]
        )[0]

    def cross_query(self, layer, cross, hidden):
        return cross.self.query_proj(hidden)

    def cross_key_value(self, layer, cross, documents):
        return cross.self.key_proj(documents), cross.self.value_proj(documents)

    def cross_settings(self, layer, cross):
        position_terms = len({"c2p", "p2c"} & set(layer.attention.self.pos_att_type))
        return 1 / math.sqrt(cross.self.attention_head_size * (1 + position_terms)), cross.self.dropout.p, cross.self

    def classify(self, model, pooled):
        head = model.classification_head
        return head["classifier"](head["dropout"](head["pooler"](pooled[:, None])))


class _ModernBertFamily(_EncoderFamily):
    """ModernBERT (and Ettin): pre-norm layers, rotary positions, alternating global and sliding-window layers.

    The query self-attention keeps the layer's rotary positions (query positions from 0) and its local/global
    pattern. Cross-attention, as in the paper's Ettin models, has no rotary term and applies the layer's `attn_norm`
    to the query and to the document states; it is a `ModernBertAttention` whose fused `Wqkv` gives Q (from the
    query) and K, V (from the documents). The final norm is applied to the query states before the head.
    """

    layers_path = "layers"

    def build_backbone(self, model_class, lower_config):
        lower_config.tie_last_hidden_states = False  # see `lower`
        backbone = super().build_backbone(model_class, lower_config)
        # Its rotary embedding knows only the attention types of the independent layers; the interaction layers
        # read it too (`prepare`), and may be of a type the lower ones lack (e.g. a sliding layer above fusion
        # layer 1). Built from the full config it covers every layer; its buffers are not saved, so the weights
        # are the same.
        backbone.rotary_emb = ModernBertRotaryEmbedding(self.config)
        return backbone

    def build_layer(self, config, index):
        return ModernBertEncoderLayer(config, layer_idx=index)

    def build_cross_attention(self, config, index):
        return ModernBertAttention(config, layer_idx=index)

    def self_attention_of(self, layer):
        return layer.attn

    def build_head(self, config):
        return nn.ModuleDict(
            {
                "head": ModernBertPredictionHead(config),
                "drop": nn.Dropout(config.classifier_dropout),
                "classifier": nn.Linear(config.hidden_size, config.num_labels),
            }
        )

    def lower(self, backbone, input_ids, attention_mask, token_type_ids):
        # ModernBertModel norms its output (`final_norm`); the document states are the last independent layer's raw
        # output, as for the other families, which `hidden_states[-1]` holds when not tied to `last_hidden_state`.
        output = backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=[-1])
        return output.hidden_states[-1]

    def prepare(self, model, hidden, query_valid):
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        rotary = model.backbone.rotary_emb
        return {
            "mask": {
                "full_attention": _query_mask(model.config, hidden, query_valid),
                "sliding_attention": _query_mask(model.config, hidden, query_valid, sliding=True),
            },
            "rotary": {kind: rotary(hidden, positions, kind) for kind in set(self.config.layer_types)},
        }

    def self_attention(self, layer, hidden, context):
        kind = layer.attention_type
        attention = layer.attn(
            layer.attn_norm(hidden), position_embeddings=context["rotary"][kind], attention_mask=context["mask"][kind]
        )[0]
        return hidden + attention

    @staticmethod
    def _fused(cross, states, rows: slice) -> torch.Tensor:
        """`states` through the `rows` of the fused `Wqkv` projection (Q: the first third; K and V: the rest)."""
        bias = cross.Wqkv.bias
        return F.linear(states, cross.Wqkv.weight[rows], None if bias is None else bias[rows])

    def cross_query(self, layer, cross, hidden):
        return self._fused(cross, layer.attn_norm(hidden), slice(None, cross.Wqkv.out_features // 3))

    def cross_key_value(self, layer, cross, documents):
        keys_values = self._fused(cross, layer.attn_norm(documents), slice(cross.Wqkv.out_features // 3, None))
        return keys_values.chunk(2, dim=-1)

    def cross_settings(self, layer, cross):
        return cross.head_dim**-0.5, cross.attention_dropout, cross

    def cross_output(self, layer, cross, context, hidden):
        return hidden + cross.out_drop(cross.Wo(context))

    def feed_forward(self, layer, hidden):
        return hidden + layer.mlp(layer.mlp_norm(hidden))

    def finalize(self, model, hidden):
        return model.backbone.final_norm(hidden)

    def classify(self, model, pooled):
        head = model.classification_head
        return head["classifier"](head["drop"](head["head"](pooled)))


_FAMILIES = {
    "bert": _BertFamily,
    "roberta": _BertLikeFamily,
    "electra": _BertLikeFamily,
    "mpnet": _MPNetFamily,
    "deberta-v2": _DebertaV2Family,
    "modernbert": _ModernBertFamily,
}


def _family_of(config: MiceConfig) -> _EncoderFamily:
    return _FAMILIES[config.encoder_family](config.encoder_config)


def _uses_token_types(encoder_config) -> bool:
    """Whether the encoder embeds token types (then queries get type 0 and documents type 1)."""
    return getattr(encoder_config, "type_vocab_size", 0) > 1


def _sub_config(encoder_config, num_hidden_layers: int):
    """A copy of the encoder config with fewer layers (per-layer lists cut to match)."""
    config = copy.deepcopy(encoder_config)
    config.num_hidden_layers = num_hidden_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types[:num_hidden_layers])
    return config


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


class MicePreTrainedModel(PreTrainedModel):
    config_class = MiceConfig
    config: MiceConfig
    base_model_prefix = "mice"
    supports_gradient_checkpointing = False
    # Flash-attention takes padding masks only: it cannot keep query tokens off the query [CLS] (`mask_query_to_cls`),
    # and transformers' flash path assumes left-padded queries in cross-attention. Custom attention backends get no
    # mask from transformers' mask builders at all. So neither is offered.
    _supports_flash_attn = False
    _supports_attention_backend = False

    @property
    def _supports_sdpa(self) -> bool:
        """Where the encoder family's own attention goes through the attention interface (MPNet and DeBERTa compute
        attention themselves, so MICE on them is eager only)."""
        return _family_of(self.config).attention_interface

    @property
    def _supports_flex_attn(self) -> bool:
        """Like `_supports_sdpa`: flex attention reaches every attention of the families that use the interface."""
        return _family_of(self.config).attention_interface


class MiceModel(MicePreTrainedModel):
    """The MICE encoder: independent lower layers, query-only interaction layers; returns the final query states.

    Three ways in (all give the same result for the same texts):

    * joint pairs `input_ids`/`attention_mask`[/`token_type_ids`] as a cross-encoder tokenizer makes them for
      `(query, document)` (what sentence-transformers' CrossEncoder, MTEB and BEIR send); the pair is split into
      `[CLS] q [SEP]` and `[CLS] d [SEP]` (by token types where the family has them, at the first separator
      otherwise), then each side is truncated to `max_query_length` / `max_document_length`, keeping its first
      tokens and its final separator;
    * separate `query_input_ids`/`query_attention_mask` (Q queries) and `document_input_ids`/
      `document_attention_mask` (N documents, N a multiple of Q): query i is paired with documents
      `i*N/Q .. (i+1)*N/Q - 1` and its lower layers run once;
    * pre-encoded `document_states` (`encode_documents`) with separate query inputs, same rule.

    All inputs must be right-padded (the tokenizers' default).
    """

    def __init__(self, config: MiceConfig):
        super().__init__(config)
        config = self.config
        family = _family_of(config)
        encoder_config = config.encoder_config
        # The interaction layers read the backend from the encoder config; PreTrainedModel resolves it on ours only.
        encoder_config._attn_implementation = config._attn_implementation
        lower_config = _sub_config(encoder_config, config.fusion_layer)
        model_class = AutoModel._model_mapping[type(encoder_config)]
        self.backbone = family.build_backbone(model_class, lower_config)
        kept = range(config.fusion_layer, config.kept_layers)
        self.interaction = nn.ModuleList([family.build_layer(encoder_config, i) for i in kept])
        self.cross_attention = nn.ModuleList([family.build_cross_attention(encoder_config, i) for i in kept])
        self.post_init()

    @property
    def family(self):
        return _family_of(self.config)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    # -- lower layers ----------------------------------------------------------------------------------------------
    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type: int) -> torch.Tensor:
        token_type_ids = None
        if _uses_token_types(self.config.encoder_config):
            token_type_ids = torch.full_like(input_ids, token_type)
        return self.family.lower(self.backbone, input_ids, attention_mask, token_type_ids)

    def _check_sequences(self, input_ids, attention_mask, what: str, limit: int):
        if input_ids is None or attention_mask is None:
            raise ValueError(f"{what}_input_ids and {what}_attention_mask are both required")
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"{what}_input_ids {tuple(input_ids.shape)} and {what}_attention_mask {tuple(attention_mask.shape)} "
                "must both be (batch, length)"
            )
        if input_ids.shape[0] == 0:
            raise ValueError(f"no {what}s were given (batch of size 0)")
        lengths = attention_mask.sum(dim=1)
        if bool((lengths < 2).any()):
            raise ValueError(
                f"every {what} needs at least its two special tokens ([CLS] ... [SEP]); rows "
                f"{torch.nonzero(lengths < 2).flatten().tolist()} have fewer (use model.tokenize_{what}s)"
            )
        if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError(f"{what} inputs must be right-padded (padding_side='right')")
        if input_ids.shape[1] > limit:
            raise ValueError(
                f"{what} inputs have {input_ids.shape[1]} tokens, more than max_{what}_length={limit}; tokenize with "
                f"model.tokenize_{what}s (it truncates) or raise max_{what}_length"
            )

    def encode_queries(self, query_input_ids: torch.Tensor, query_attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the independent layers on `[CLS] q [SEP]` queries: `(Q, Lq, H)` states of layer `fusion_layer - 1`."""
        self._check_sequences(query_input_ids, query_attention_mask, "query", self.config.max_query_length)
        return self._encode(query_input_ids, query_attention_mask, token_type=0)

    def encode_documents(
        self, document_input_ids: torch.Tensor, document_attention_mask: torch.Tensor
    ) -> MiceDocumentStates:
        """Run the independent layers on `[CLS] d [SEP]` documents (token type 1 where the family has token types).

        The result can be cached, indexed, concatenated and scored later against any query with `score`.
        """
        self._check_sequences(document_input_ids, document_attention_mask, "document", self.config.max_document_length)
        states = self._encode(document_input_ids, document_attention_mask, token_type=1)
        return MiceDocumentStates(states, document_attention_mask)

    # -- interaction layers ----------------------------------------------------------------------------------------
    def _check_document_states(self, states, queries: int) -> int:
        if not isinstance(states, (MiceDocumentStates, MiceDocumentKeyValues)):
            raise TypeError(
                "document_states must be a MiceDocumentStates (from encode_documents) or MiceDocumentKeyValues (from "
                f"document_key_values), got {type(states)}"
            )
        hidden = self.config.encoder_config.hidden_size
        width = hidden * (2 * self.config.interaction_layers if isinstance(states, MiceDocumentKeyValues) else 1)
        if states.values.shape[-1] != width:
            what = "keys and values" if isinstance(states, MiceDocumentKeyValues) else "document_states"
            raise ValueError(
                f"{what} have width {states.values.shape[-1]} but this model's are {width} wide (hidden size {hidden}): "
                "they were encoded by a different model"
            )
        documents = states.values.shape[0]  # not len(): it would make a traced size a constant
        if documents == 0:
            raise ValueError("no documents were given (document_states is empty)")
        if documents % queries:
            raise ValueError(
                f"{documents} documents for {queries} queries: the number of documents must be a multiple of the number "
                "of queries (query i is scored against documents i*N/Q .. (i+1)*N/Q - 1)"
            )
        return documents // queries

    def document_key_values(self, document_states: MiceDocumentStates) -> MiceDocumentKeyValues:
        """The keys and values that each interaction layer's cross-attention computes from these document states
        (zeros at padding). Scoring them (`interact`, `score`) gives exactly the scores of the states."""
        self._check_document_states(document_states, 1)
        valid = document_states.attention_mask.bool()
        tokens = _Tokens(valid)
        packed = tokens.pack(document_states.hidden_states)
        layers = zip(self.interaction, self.cross_attention, strict=True)
        projected = [part for layer, cross in layers for part in self.family.cross_key_value(layer, cross, packed)]
        return MiceDocumentKeyValues(tokens.unpack(torch.cat(projected, dim=-1)), document_states.attention_mask)

    def interact(
        self,
        query_states: torch.Tensor,
        query_attention_mask: torch.Tensor,
        document_states: MiceDocumentStates | MiceDocumentKeyValues,
        output_attentions: bool = False,
        only_cls: bool = False,
        output_hidden_states: bool = False,
        skip_padding: bool = True,
    ) -> MiceModelOutput:
        """Run the interaction layers for Q encoded queries against N encoded documents (N a multiple of Q), given as
        states or as their cross-attention keys and values.

        With `only_cls`, the last layer computes the query [CLS] row only (after a full self-attention, whose keys
        need every row): that is all a [CLS]-pooled head reads, and under `mask_cls_to_doc` it skips the last
        cross-attention's projections of the documents. `last_hidden_state` is then `(N, 1, H)`. `skip_padding=False`
        runs the per-token modules on padding too: the traceable form for `torch.export` / ONNX (same scores).
        """
        per_query = self._check_document_states(document_states, query_states.shape[0])
        family = self.family
        tokens = _Tokens if skip_padding else _AllTokens
        layers = list(zip(self.interaction, self.cross_attention, strict=True))
        # Up to the first cross-attention a query's states do not depend on the document: the first self-attention
        # runs once per query, and only then is each query repeated for its documents.
        query_valid = query_attention_mask.bool()
        hidden = family.self_attention(layers[0][0], query_states, family.prepare(self, query_states, query_valid))
        hidden, query_attention_mask, query_valid = (
            _repeat_rows(tensor, per_query) for tensor in (hidden, query_attention_mask, query_valid)
        )
        context = family.prepare(self, hidden, query_valid) if len(layers) > 1 else None

        # Cached documents may live on another device or in a storage dtype; `to` is a no-op when they already match.
        document_states = document_states.to(device=hidden.device, dtype=hidden.dtype)
        document_tokens = tokens(document_states.attention_mask.bool())
        if isinstance(document_states, MiceDocumentKeyValues):
            cached = document_states.per_layer(self.config.encoder_config.hidden_size)

            def keys_values(index, layer, cross):
                return cached[index]
        else:
            documents = document_tokens.pack(document_states.hidden_states)

            def keys_values(index, layer, cross):
                return [document_tokens.unpack(part) for part in family.cross_key_value(layer, cross, documents)]

        # Which query tokens read the document: not the padding, nor the [CLS] under `mask_cls_to_doc`.
        can_cross = query_valid.clone()
        if self.config.mask_cls_to_doc:
            can_cross[:, 0] = False

        query_tokens = tokens(query_valid)
        cross_attentions = []
        hidden_states = [query_states.repeat_interleave(per_query, dim=0)] if output_hidden_states else None
        last = len(layers) - 1
        for index, (layer, cross) in enumerate(layers):
            if index > 0:
                hidden = family.self_attention(layer, hidden, context)
            if only_cls and index == last:
                hidden, can_cross, query_attention_mask = hidden[:, :1], can_cross[:, :1], query_attention_mask[:, :1]
                query_tokens = tokens(query_attention_mask.bool())
            if only_cls and index == last and self.config.mask_cls_to_doc:
                # The [CLS] may not cross-attend: its context is exactly zero, so the documents are not projected.
                hidden = family.cross_output(layer, cross, torch.zeros_like(hidden), hidden)
            else:
                key, value = keys_values(index, layer, cross)
                hidden, weights = self._cross_attention(
                    layer, cross, hidden, query_tokens, key, value, document_tokens.valid, can_cross, output_attentions
                )
                if output_attentions:
                    cross_attentions.append(weights)
            hidden = query_tokens.unpack(family.feed_forward(layer, query_tokens.pack(hidden)), hidden)
            if output_hidden_states and index < last:
                hidden_states.append(hidden)
        hidden = family.finalize(self, hidden)
        return MiceModelOutput(
            last_hidden_state=hidden,
            attention_mask=query_attention_mask,
            cross_attentions=tuple(cross_attentions) if output_attentions else None,
            hidden_states=(*hidden_states, hidden) if output_hidden_states else None,
        )

    def _cross_attention(self, layer, cross, hidden, query_tokens, key, value, document_valid, can_cross, need_weights):
        """One cross-attention block of the query over the frozen documents, through transformers' attention interface
        (the configured backend; eager where the weights are asked for, as no fused kernel returns them).

        `key` and `value` are the documents' `(N, Ld, H)` projections. The mask is the documents' padding alone, which
        every backend takes; a query token that may not cross-attend (`can_cross` false: the [CLS] under
        `mask_cls_to_doc`, padding) still gets a finite attention row, and its context is then set to exactly zero.
        """
        family = self.family
        config = self.config.encoder_config
        heads = config.num_attention_heads
        packed = query_tokens.pack(hidden)
        query = query_tokens.unpack(family.cross_query(layer, cross, packed))
        scaling, dropout, owner = family.cross_settings(layer, cross)
        implementation = "eager" if need_weights else config._attn_implementation
        mask = _attention_mask(implementation, document_valid, query.shape[1], query.dtype)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        context, weights = attention(
            owner,
            _split_heads(query, heads),
            _split_heads(key, heads),
            _split_heads(value, heads),
            mask,
            dropout=dropout if owner.training else 0.0,
            scaling=scaling,
            is_causal=False,
        )
        context = context.reshape(*query.shape[:2], -1) * can_cross[..., None]
        if weights is not None:
            weights = weights * can_cross[:, None, :, None]
        output = family.cross_output(layer, cross, query_tokens.pack(context), packed)
        return query_tokens.unpack(output, hidden), weights

    # -- joint pairs -----------------------------------------------------------------------------------------------
    def split_pairs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Split jointly tokenized `(query, document)` pairs into the separate inputs of the other entry points.

        `[CLS] q [SEP] d [SEP]` (RoBERTa/MPNet: `<s> q </s></s> d </s>`) becomes `[CLS] q [SEP]` and `[CLS] d [SEP]`.
        Where the family has token types and `token_type_ids` mark a second segment, the query is the type-0
        segment; otherwise it ends at the first separator. Each side is then truncated to `max_query_length` /
        `max_document_length`: it keeps its first tokens and ends with its separator, exactly as the tokenizer
        truncates with `tokenize_queries` / `tokenize_documents`. An empty text becomes `[CLS] [SEP]`.
        """
        config = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if input_ids.dim() != 2 or input_ids.shape[0] == 0:
            raise ValueError(
                f"input_ids must be a non-empty (batch, length) tensor, got shape {tuple(input_ids.shape)}"
            )
        if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError("joint pair inputs must be right-padded (padding_side='right')")
        if config.cls_token_id is None or config.sep_token_id is None:
            raise ValueError(
                "this MiceConfig has no cls_token_id/sep_token_id, so joint pairs cannot be split; build the model with "
                "MiceForSequenceClassification.from_backbone (it reads them from the tokenizer) or set them"
            )
        valid = attention_mask.bool()
        lengths = valid.sum(dim=1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        by_type = (
            token_type_ids is not None
            and _uses_token_types(config.encoder_config)
            and bool(((token_type_ids == 1) & valid).any(dim=1).all())
        )
        if by_type:
            query_lengths = ((token_type_ids == 0) & valid).sum(dim=1)
            document_starts = query_lengths
        else:
            is_sep = (input_ids == config.sep_token_id) & valid
            if not bool(is_sep.any(dim=1).all()):
                raise ValueError(
                    "cannot split a joint pair without a separator token: pass (query, document) pairs tokenized "
                    "together, e.g. tokenizer(queries, documents)"
                )
            query_lengths = torch.where(is_sep, positions, input_ids.shape[1]).min(dim=1).values + 1
            document_starts = query_lengths + config.pair_separators - 1
        document_lengths = lengths - document_starts + 1  # the document's own [CLS] replaces the query part
        if bool((document_lengths < 2).any()) or bool((input_ids[:, 0] != config.cls_token_id).any()):
            raise ValueError(
                "input_ids are not (query, document) pairs in the form [CLS] q [SEP] d [SEP]: tokenize them with the "
                "model's tokenizer as tokenizer(queries, documents)"
            )

        def gather(starts, sizes, limit, first):
            size = min(int(sizes.max()), limit)
            kept = sizes.clamp(max=limit)
            index = (starts[:, None] + torch.arange(size, device=input_ids.device)).clamp(max=input_ids.shape[1] - 1)
            ids = input_ids.gather(1, index)
            if first is not None:
                ids[:, 0] = first
            columns = torch.arange(size, device=input_ids.device)[None, :]
            ids = ids.masked_fill(columns == (kept - 1)[:, None], config.sep_token_id)
            mask = (columns < kept[:, None]).to(attention_mask.dtype)
            pad = config.pad_token_id if config.pad_token_id is not None else 0
            return ids.masked_fill(mask == 0, pad), mask

        query_ids, query_mask = gather(torch.zeros_like(lengths), query_lengths, config.max_query_length, None)
        document_ids, document_mask = gather(
            document_starts - 1, document_lengths, config.max_document_length, config.cls_token_id
        )
        return {
            "query_input_ids": query_ids,
            "query_attention_mask": query_mask,
            "document_input_ids": document_ids,
            "document_attention_mask": document_mask,
        }

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        document_input_ids: torch.Tensor | None = None,
        document_attention_mask: torch.Tensor | None = None,
        document_states: MiceDocumentStates | None = None,
        output_attentions: bool | None = None,
        only_cls: bool = False,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MiceModelOutput:
        output_attentions = bool(output_attentions)
        if input_ids is not None:
            if query_input_ids is not None or document_input_ids is not None or document_states is not None:
                raise ValueError("pass either joint pairs (input_ids) or separate query/document inputs, not both")
            split = self.split_pairs(input_ids, attention_mask, token_type_ids)
            query_input_ids, query_attention_mask = split["query_input_ids"], split["query_attention_mask"]
            document_input_ids, document_attention_mask = split["document_input_ids"], split["document_attention_mask"]
        if query_input_ids is None:
            raise ValueError("no query was given: pass input_ids (joint pairs) or query_input_ids/query_attention_mask")
        if document_states is None:
            if document_input_ids is None:
                raise ValueError(
                    "no documents were given: pass document_input_ids/document_attention_mask or document_states"
                )
            if document_input_ids.shape[0] == 0:
                raise ValueError("no documents were given (batch of size 0)")
            if document_input_ids.shape[0] % query_input_ids.shape[0]:
                raise ValueError(
                    f"{document_input_ids.shape[0]} documents for {query_input_ids.shape[0]} queries: the number of "
                    "documents must be a multiple of the number of queries"
                )
            document_states = self.encode_documents(document_input_ids, document_attention_mask)
        query_states = self.encode_queries(query_input_ids, query_attention_mask)
        return self.interact(
            query_states, query_attention_mask, document_states, output_attentions, only_cls, bool(output_hidden_states)
        )


class MiceForSequenceClassification(MicePreTrainedModel):
    """MICE with the backbone family's own classification head on the query [CLS] (or the query mean).

    `forward` takes the three kinds of input of `MiceModel` and returns `logits (N, num_labels)`: raw scores, no
    activation. (sentence-transformers' `CrossEncoder.predict` applies a Sigmoid to one-label models unless
    `activation_fn=torch.nn.Identity()` is given.) `score` scores cached `MiceDocumentStates`.
    """

    def __init__(self, config: MiceConfig):
        super().__init__(config)
        config = self.config
        self.mice = MiceModel(config)
        head_config = copy.deepcopy(config.encoder_config)
        head_config.num_labels = config.num_labels
        self.classification_head = self.mice.family.build_head(head_config)
        self.post_init()

    # -- building from a pretrained encoder ------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        fusion_layer: int = 4,
        interaction_layers: int = 3,
        encoder_kwargs: dict | None = None,
        **kwargs,
    ) -> MiceForSequenceClassification:
        """Build MICE-ℓ`fusion_layer`+`interaction_layers` from a pretrained encoder or cross-encoder folder/Hub id.

        Copies the embeddings and the kept layers (layers `fusion_layer + interaction_layers ..` are dropped), seeds
        each interaction layer's cross-attention from that layer's self-attention, and copies a cross-encoder's
        classification head (`*ForSequenceClassification` checkpoint with the same `num_labels`); otherwise the head
        is new. Special token ids come from the tokenizer saved with the model. `encoder_kwargs` override the
        encoder's own config (e.g. its dropout probabilities); `kwargs` go to `MiceConfig` (`num_labels`,
        `mask_query_to_cls`, `max_query_length`, ..., `attn_implementation`).
        """
        attn_implementation = kwargs.pop("attn_implementation", None)
        encoder_config = AutoConfig.from_pretrained(name_or_path, **(encoder_kwargs or {}))
        architectures = encoder_config.architectures or []
        is_cross_encoder = any(a.endswith("ForSequenceClassification") for a in architectures)
        config_kwargs = dict(kwargs)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError):
            tokenizer = None
        if tokenizer is not None:
            config_kwargs.setdefault("cls_token_id", tokenizer.cls_token_id)
            config_kwargs.setdefault("sep_token_id", tokenizer.sep_token_id)
            config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
            pair = len(tokenizer("a", "b")["input_ids"])
            single = len(tokenizer("a")["input_ids"]) + len(tokenizer("b")["input_ids"])
            config_kwargs.setdefault("pair_separators", pair - single + 2)
        if is_cross_encoder and "num_labels" not in config_kwargs and encoder_config.id2label is not None:
            config_kwargs["num_labels"] = encoder_config.num_labels
        encoder_dict = encoder_config.to_dict()
        for key in ("architectures", "id2label", "label2id", "problem_type"):
            encoder_dict.pop(key, None)
        config = MiceConfig(
            encoder_config=encoder_dict,
            fusion_layer=fusion_layer,
            interaction_layers=interaction_layers,
            **config_kwargs,
        )
        if attn_implementation is not None:
            if attn_implementation != "eager" and not _family_of(config).attention_interface:
                raise ValueError(
                    f"the {config.encoder_family} encoder computes attention itself, so MICE on it supports only "
                    f"attn_implementation='eager' (got {attn_implementation!r})"
                )
            config._attn_implementation = attn_implementation
        source_class = AutoModelForSequenceClassification if is_cross_encoder else AutoModel
        source = source_class.from_pretrained(name_or_path, attn_implementation="eager")
        model = cls(config)
        model.load_backbone_state(source)
        return model

    @torch.no_grad()
    def load_backbone_state(self, source: PreTrainedModel) -> None:
        """Copy weights from a family model (`XModel` or `XForSequenceClassification`) into this MICE model."""
        config = self.config
        base = source.base_model
        prefix = self.mice.family.layers_path + "."
        lower, interaction = {}, {}
        for name, tensor in base.state_dict().items():
            if name.startswith(prefix):
                index, rest = name[len(prefix) :].split(".", 1)
                index = int(index)
                if index < config.fusion_layer:
                    lower[name] = tensor
                elif index < config.kept_layers:
                    interaction[f"{index - config.fusion_layer}.{rest}"] = tensor
            else:
                lower[name] = tensor
        missing, unexpected = self.mice.backbone.load_state_dict(lower, strict=False)
        unexpected = [name for name in unexpected if not name.startswith("pooler.")]  # MICE heads have their own
        if unexpected:
            raise ValueError(f"unexpected backbone weights {unexpected}")
        self.mice.interaction.load_state_dict(interaction)
        for layer, cross in zip(self.mice.interaction, self.mice.cross_attention, strict=True):
            _seed_from(cross, self.mice.family.self_attention_of(layer))
        head_state = {}
        if source is not base:  # a cross-encoder: its head is what lies outside the base model
            base_prefix = source.base_model_prefix + "."
            head_state = {name: t for name, t in source.state_dict().items() if not name.startswith(base_prefix)}
        new_weights = [f"mice.backbone.{name}" for name in missing]
        if head_state and source.config.num_labels == config.num_labels:
            self.classification_head.load_state_dict(head_state)
        else:
            new_weights.append("classification_head")
            if head_state:
                logger.warning(
                    f"the source cross-encoder has num_labels={source.config.num_labels}, this model "
                    f"{config.num_labels}: its classification head is not copied"
                )
        if new_weights:
            logger.info(f"MICE weights newly initialized (train them): {', '.join(new_weights)}")

    # -- tokenization ----------------------------------------------------------------------------------------------
    def _tokenize(self, tokenizer, texts, what: str, limit: int) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError(f"no {what}s were given (empty list)")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"{what}s must be strings; items {bad[:10]} are not")
        encoded = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=limit,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        device = self.device
        return {
            f"{what}_input_ids": encoded["input_ids"].to(device),
            f"{what}_attention_mask": encoded["attention_mask"].to(device),
        }

    def tokenize_queries(self, tokenizer, texts: list[str] | str) -> dict[str, torch.Tensor]:
        """Tokenize queries as `[CLS] q [SEP]`, truncated to `max_query_length` tokens (keeping the final [SEP]).

        Returns `query_input_ids` and `query_attention_mask` (right-padded), ready for `forward` or `score`. An empty
        string is allowed and becomes `[CLS] [SEP]`.
        """
        return self._tokenize(tokenizer, texts, "query", self.config.max_query_length)

    def tokenize_documents(self, tokenizer, texts: list[str] | str) -> dict[str, torch.Tensor]:
        """Tokenize documents as `[CLS] d [SEP]`, truncated to `max_document_length` tokens (keeping the final [SEP]).

        Returns `document_input_ids` and `document_attention_mask`, ready for `forward` or `encode_documents`. An empty
        string is allowed and becomes `[CLS] [SEP]`.
        """
        return self._tokenize(tokenizer, texts, "document", self.config.max_document_length)

    # -- scoring ---------------------------------------------------------------------------------------------------
    def tokenize_passages(
        self, tokenizer, texts: list[str] | str, stride: int | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Tokenize documents as overlapping `[CLS] passage [SEP]` windows of `max_document_length` tokens, starting
        `stride` tokens apart (default: half a window); a document that fits is one passage.

        Returns the inputs of `encode_documents` and `passage_to_document (P,)`; score the passages like documents
        and combine them with `modeling_mice.aggregate_passage_scores` (MaxP, FirstP, sum of the top).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"documents must be strings; items {bad[:10]} are not")
        encoded, passage_to_document = tokenize_passages(tokenizer, texts, self.config.max_document_length, stride)
        inputs = {
            "document_input_ids": encoded["input_ids"].to(self.device),
            "document_attention_mask": encoded["attention_mask"].to(self.device),
        }
        return inputs, passage_to_document

    def encode_documents(
        self, document_input_ids: torch.Tensor, document_attention_mask: torch.Tensor, key_values: bool = False
    ) -> MiceDocumentStates | MiceDocumentKeyValues:
        """Encode documents once (see `MiceModel.encode_documents`); score them later with `score`.

        With `key_values`, return what every interaction layer's cross-attention reads of them instead
        (`MiceDocumentKeyValues`): scoring is then query-side work only, at `2 * interaction_layers` times the storage.
        """
        states = self.mice.encode_documents(document_input_ids, document_attention_mask)
        return self.mice.document_key_values(states) if key_values else states

    def document_key_values(self, document_states: MiceDocumentStates) -> MiceDocumentKeyValues:
        """Document states -> the keys and values of every interaction layer (see `MiceModel.document_key_values`)."""
        return self.mice.document_key_values(document_states)

    def _only_cls(self, output_attentions) -> bool:
        """A [CLS]-pooled head reads one row of the last layer: compute only that one (unless attentions are wanted)."""
        return self.config.pooling == "cls" and not output_attentions

    def _pool(self, output: MiceModelOutput) -> torch.Tensor:
        hidden = output.last_hidden_state
        if self.config.pooling == "mean":
            mask = output.attention_mask.to(hidden.dtype)[..., None]
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        return hidden[:, 0]

    def _logits(self, output: MiceModelOutput) -> MiceSequenceClassifierOutput:
        logits = self.mice.family.classify(self, self._pool(output))
        return MiceSequenceClassifierOutput(
            logits=logits, cross_attentions=output.cross_attentions, hidden_states=output.hidden_states
        )

    def score(
        self,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
        document_states: MiceDocumentStates | MiceDocumentKeyValues,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> MiceSequenceClassifierOutput:
        """Score Q queries against N pre-encoded documents (N a multiple of Q): query i against documents
        `i*N/Q .. (i+1)*N/Q - 1`. Runs each query's lower layers once; `logits` are `(N, num_labels)` raw scores.
        `document_states` are states (`encode_documents`) or their keys and values (`document_key_values`)."""
        query_states = self.mice.encode_queries(query_input_ids, query_attention_mask)
        output = self.mice.interact(
            query_states,
            query_attention_mask,
            document_states,
            output_attentions,
            self._only_cls(output_attentions),
            output_hidden_states,
        )
        return self._logits(output)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        document_input_ids: torch.Tensor | None = None,
        document_attention_mask: torch.Tensor | None = None,
        document_states: MiceDocumentStates | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MiceSequenceClassifierOutput:
        """Raw scores `(N, num_labels)` for joint pairs, separate inputs or cached documents (see `MiceModel`).

        With `labels`, `loss` is the MSE (one label) or cross-entropy (several labels) of the logits, as in
        transformers' sequence-classification models.
        """
        output = self.mice(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            query_input_ids=query_input_ids,
            query_attention_mask=query_attention_mask,
            document_input_ids=document_input_ids,
            document_attention_mask=document_attention_mask,
            document_states=document_states,
            output_attentions=output_attentions,
            only_cls=self._only_cls(output_attentions),
            output_hidden_states=output_hidden_states,
        )
        result = self._logits(output)
        if labels is not None:
            logits = result.logits
            if self.config.num_labels == 1:
                result.loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            else:
                result.loss = F.cross_entropy(logits, labels.view(-1))
        return result


# ----------------------------------------------------------------------------------------------------------------------
# Export-friendly forwards (torch.export / ONNX)
# ----------------------------------------------------------------------------------------------------------------------


class MiceDocumentEncoder(nn.Module):
    """`(input_ids, attention_mask)` of `[CLS] d [SEP]` documents -> their states `(N, Ld, H)`, or with `key_values`
    their interaction keys and values `(N, Ld, 2 * interaction_layers * H)`.

    The traceable form of `encode_documents` (no input checks, no data-dependent shapes), for `torch.onnx.export`.
    """

    def __init__(self, model: MiceForSequenceClassification, key_values: bool = False):
        super().__init__()
        self.model = model
        self.key_values = key_values

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mice = self.model.mice
        states = mice._encode(input_ids, attention_mask, token_type=1)
        if not self.key_values:
            return states
        layers = zip(mice.interaction, mice.cross_attention, strict=True)
        parts = [part for layer, cross in layers for part in mice.family.cross_key_value(layer, cross, states)]
        return torch.cat(parts, dim=-1) * attention_mask[..., None].to(states.dtype)


class MiceQueryScorer(nn.Module):
    """`(query_input_ids (1, Lq), query_attention_mask, documents, document_attention_mask)` -> scores `(N,)` (the
    first logit) of the query against N documents given as states `(N, Ld, H)` or, with `key_values`, as keys and
    values `(N, Ld, 2 * interaction_layers * H)`.

    The traceable form of `score` (no input checks, padding computed through), for `torch.onnx.export`.
    """

    def __init__(self, model: MiceForSequenceClassification, key_values: bool = False):
        super().__init__()
        self.model = model
        self.documents = MiceDocumentKeyValues if key_values else MiceDocumentStates

    def forward(
        self,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
        documents: torch.Tensor,
        document_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        query_states = model.mice._encode(query_input_ids, query_attention_mask, token_type=0)
        output = model.mice.interact(
            query_states,
            query_attention_mask,
            self.documents(documents, document_attention_mask),
            only_cls=model._only_cls(False),
            skip_padding=False,
        )
        return model._logits(output).logits[:, 0]


__all__ = [
    "MiceDocumentEncoder",
    "MiceDocumentKeyValues",
    "MiceQueryScorer",
    "MiceDocumentStates",
    "MiceForSequenceClassification",
    "MiceModel",
    "MiceModelOutput",
    "MicePreTrainedModel",
    "MiceSequenceClassifierOutput",
]
