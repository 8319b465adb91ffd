"""Configuration of MICE (Minimal Interaction Cross-Encoders).

MICE-ℓk+m keeps the first ``k + m`` layers of an encoder: layers ``0..k-1`` encode the query and the document
independently, layers ``k..k+m-1`` update only the query tokens (self-attention over the query, cross-attention to the
frozen document states output by layer ``k-1``), and the remaining layers are dropped.

Reference: Vast, Morand et al., "MICE: Minimal Interaction Cross-Encoders for efficient Re-ranking", arXiv 2602.16299.
"""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

# `model_type` of every supported encoder family (DeBERTa-v3 checkpoints use the DeBERTa-v2 code and model_type).
SUPPORTED_ENCODERS = ("bert", "roberta", "electra", "mpnet", "deberta-v2", "modernbert")
# Families whose position ids start after `padding_idx` (RoBERTa style), so that fewer positions are usable.
_PADDING_OFFSET_POSITIONS = ("roberta", "mpnet")
# Families whose tokenizers join a pair with two separators: `<s> q </s></s> d </s>`.
_DOUBLE_SEPARATOR_PAIRS = ("roberta", "mpnet")
POOLING_METHODS = ("cls", "mean")


def encoder_max_length(encoder_config: PreTrainedConfig) -> int:
    """The longest sequence (special tokens included) the encoder's position scheme supports."""
    if encoder_config.model_type in _PADDING_OFFSET_POSITIONS:
        return encoder_config.max_position_embeddings - encoder_config.pad_token_id - 1
    return encoder_config.max_position_embeddings


class MiceConfig(PreTrainedConfig):
    r"""Configuration of a MICE model: an encoder's own configuration plus where and how query and document meet.

    Args:
        encoder_config (`dict` or `PreTrainedConfig`):
            The configuration of the backbone encoder (one of `SUPPORTED_ENCODERS`), at its original depth. The model
            builds only its first `fusion_layer + interaction_layers` layers.
        fusion_layer (`int`, defaults to 4):
            `k` in MICE-ℓk+m: how many bottom layers encode query and document independently (at least 1).
        interaction_layers (`int`, defaults to 3):
            `m` in MICE-ℓk+m: how many layers above the fusion layer are kept as interaction layers (at least 1).
            All layers from `fusion_layer + interaction_layers` on are dropped.
        mask_query_to_cls (`bool`, defaults to True):
            In the interaction layers, query tokens may not attend to the query [CLS] (only [CLS] itself does).
        mask_cls_to_doc (`bool`, defaults to True):
            In the interaction layers, the query [CLS] may not cross-attend to the document; its cross-attention
            output is then exactly zero.
        max_query_length (`int`, *optional*):
            Longest query, special tokens included; longer queries keep their first tokens and their final separator.
            Defaults to the longest sequence the encoder supports.
        max_document_length (`int`, *optional*):
            Longest document, special tokens included, truncated the same way. Defaults like `max_query_length`.
        pooling (`str`, defaults to "cls"):
            What the classification head reads: the final state of the query [CLS] (`"cls"`) or the mean of the final
            states of all query tokens (`"mean"`). ModernBERT backbones default to their `classifier_pooling`.
        cls_token_id, sep_token_id, pad_token_id (`int`, *optional*):
            The tokenizer's special tokens, used to split joint `(query, document)` pairs and to re-assemble the
            document as `[CLS] d [SEP]`. `MiceForSequenceClassification.from_backbone` reads them from the tokenizer.
        pair_separators (`int`, *optional*):
            How many separators the tokenizer puts between the two texts of a pair (2 for RoBERTa and MPNet, 1 for
            the others, which is the default).

    Scores are raw logits of shape `(batch, num_labels)`; `num_labels` defaults to 1.
    """

    model_type = "mice"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder_config: dict | PreTrainedConfig | None = None
    fusion_layer: int = 4
    interaction_layers: int = 3
    mask_query_to_cls: bool = True
    mask_cls_to_doc: bool = True
    max_query_length: int | None = None
    max_document_length: int | None = None
    pooling: str | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    pad_token_id: int | None = None
    pair_separators: int | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 1)
        super().__post_init__(**kwargs)
        encoder = self.encoder_config
        family = encoder.model_type
        if family not in SUPPORTED_ENCODERS:
            raise ValueError(
                f"MICE does not support encoders of type {family!r}; supported encoder families: "
                f"{', '.join(SUPPORTED_ENCODERS)} (DeBERTa-v3 checkpoints are 'deberta-v2')."
            )
        depth = encoder.num_hidden_layers
        if self.fusion_layer < 1:
            raise ValueError(
                f"fusion_layer={self.fusion_layer}: at least one layer must encode query and document independently "
                "(fusion_layer >= 1)."
            )
        if self.interaction_layers < 1:
            raise ValueError(
                f"interaction_layers={self.interaction_layers}: MICE needs at least one interaction layer, otherwise "
                "the query never sees the document."
            )
        if self.fusion_layer + self.interaction_layers > depth:
            raise ValueError(
                f"fusion_layer + interaction_layers = {self.fusion_layer} + {self.interaction_layers} exceeds the "
                f"{depth} layers of the {family} encoder; lower one of them."
            )
        if self.pooling is None:
            self.pooling = getattr(encoder, "classifier_pooling", "cls") if family == "modernbert" else "cls"
        if self.pooling not in POOLING_METHODS:
            raise ValueError(f"pooling={self.pooling!r} is not one of {POOLING_METHODS}.")
        if self.interaction_layers == 1 and self.mask_cls_to_doc and self.pooling == "cls":
            raise ValueError(
                "interaction_layers=1 with mask_cls_to_doc=True and pooling='cls' scores without reading the document: "
                "the [CLS] may not cross-attend, so document information reaches it only through the query tokens in "
                "a later interaction layer. Use interaction_layers >= 2, mask_cls_to_doc=False or pooling='mean'."
            )
        longest = encoder_max_length(encoder)
        for name in ("max_query_length", "max_document_length"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, longest)
            elif not 2 <= value <= longest:
                raise ValueError(
                    f"{name}={value} must be between 2 (the special tokens) and {longest} (the {family} encoder's "
                    "longest sequence)."
                )
        if self.pad_token_id is None:
            self.pad_token_id = encoder.pad_token_id
        if self.cls_token_id is None and family in _DOUBLE_SEPARATOR_PAIRS:
            self.cls_token_id = encoder.bos_token_id
        if self.sep_token_id is None and family in _DOUBLE_SEPARATOR_PAIRS:
            self.sep_token_id = encoder.eos_token_id
        if self.pair_separators is None:
            self.pair_separators = 2 if family in _DOUBLE_SEPARATOR_PAIRS else 1

    @property
    def encoder_family(self) -> str:
        """The backbone's `model_type`, e.g. `"bert"`."""
        return self.encoder_config.model_type

    @property
    def kept_layers(self) -> int:
        """How many of the encoder's layers the model holds (`fusion_layer + interaction_layers`)."""
        return self.fusion_layer + self.interaction_layers

    @property
    def dropped_layers(self) -> list[int]:
        """0-based indices of the encoder layers that MICE drops."""
        return list(range(self.kept_layers, self.encoder_config.num_hidden_layers))


__all__ = ["MiceConfig", "SUPPORTED_ENCODERS"]
