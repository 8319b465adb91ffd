"""Fingerprints: what a stored document state depends on, so that states of another model are refused, not reused.

A MICE document state is the output of the embeddings and the independent layers (below ``fusion_layer``) for the
document as the tokenizer cut it. ``document_state_fingerprint`` therefore covers exactly that: the lower layers'
weights and configuration, the fusion layer, ``max_document_length`` and the tokenizer's settings. The interaction
layers and the head are left out on purpose: a store stays valid for every model that shares the lower layers (a
MICE trained above frozen independent layers reads the states it was indexed with).

``model_fingerprint`` digests a whole model (configuration and every weight); the evaluation harness keys its
resumable runs on it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

# Keys of a backbone configuration that name or describe the run, not what the layers compute.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures", "_attn_implementation", "dtype")


def _digest(*parts) -> str:
    """SHA-256 (hardware-accelerated on current CPUs) of byte-like parts (bytes, or contiguous arrays read in place)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:32]


def _tensor_bytes(tensor: torch.Tensor):
    """The tensor's bytes as a uint8 array, without a copy when it is already contiguous on the CPU."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _state_digest(named_tensors: dict[str, torch.Tensor]) -> str:
    parts = []
    for name, tensor in sorted(named_tensors.items()):
        parts += [name.encode("utf-8"), str(tensor.dtype).encode("utf-8"), _tensor_bytes(tensor)]
    return _digest(*parts)


def model_fingerprint(model: nn.Module) -> str:
    """Digest of a model's configuration and weights: the key of everything it computes."""
    config = getattr(model, "config", None)
    config_json = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else ""
    return _digest(config_json.encode("utf-8"), _state_digest(model.state_dict()).encode("ascii"))[:24]


def tokenizer_settings(tokenizer: Any) -> dict[str, Any]:
    """What decides the token ids of a document: vocabulary, normalisation, special tokens, truncation side."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The fast tokenizer's pipeline, part by part in its own serialisation (truncation and padding are call-time
        # state, set again by every call, so they stay out).
        parts = [getattr(backend, name) for name in ("normalizer", "pre_tokenizer", "model", "post_processor")]
        spec = [b"" if part is None else part.__getstate__() for part in parts]
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        spec = [json.dumps([vocab, getattr(tokenizer, "do_lower_case", None)]).encode("utf-8")]
    spec.append(json.dumps(sorted(tokenizer.get_added_vocab().items())).encode("utf-8"))
    return {
        "tokenizer": _digest(*spec),
        "truncation_side": tokenizer.truncation_side,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def document_state_fingerprint(model: nn.Module, tokenizer: Any) -> dict[str, Any]:
    """The settings a MICE document state depends on, plus their ``digest``.

    ``model`` is a ``MiceForSequenceClassification``. The result is JSON-serialisable; two models whose fingerprints
    have the same ``digest`` give the same states for the same text. ``describe_mismatch`` says which settings differ.
    """
    config = model.config
    backbone = model.mice.backbone
    # Dropout never acts on stored states (the lower layers encode in eval mode), so its settings stay out.
    backbone_config = {
        key: value
        for key, value in backbone.config.to_dict().items()
        if key not in _VOLATILE_CONFIG_KEYS and "dropout" not in key
    }
    weights = {name: t for name, t in backbone.state_dict().items() if not name.startswith("pooler.")}
    settings = {
        "encoder_family": config.encoder_family,
        "hidden_size": config.encoder_config.hidden_size,
        "fusion_layer": config.fusion_layer,
        "max_document_length": config.max_document_length,
        **tokenizer_settings(tokenizer),
        "lower_layers_config": _digest(json.dumps(backbone_config, sort_keys=True, default=str).encode("utf-8")),
        "lower_layers_weights": _state_digest(weights),
    }
    settings["digest"] = _digest(json.dumps(settings, sort_keys=True).encode("utf-8"))
    return settings


def describe_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> str:
    """``"max_document_length 96 (stored) vs 128 (this model), ..."`` for the settings that differ."""
    keys = [key for key in stored if key != "digest" and stored.get(key) != current.get(key)]
    keys += [key for key in current if key not in stored and key != "digest"]
    return ", ".join(f"{key} {stored.get(key)!r} (stored) vs {current.get(key)!r} (this model)" for key in keys)
