"""MICE (Minimal Interaction Cross-Encoders) for transformers.

Importing this package registers `MiceConfig` ("mice"), `MiceModel` and `MiceForSequenceClassification` with
`AutoConfig`, `AutoModel` and `AutoModelForSequenceClassification`, so saved MICE folders load without
`trust_remote_code`; `save_pretrained` also writes `auto_map` and copies `configuration_mice.py` and
`modeling_mice.py`, so the same folders load elsewhere with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_mice import SUPPORTED_ENCODERS, MiceConfig
from .modeling_mice import (
    MiceDocumentEncoder,
    MiceDocumentKeyValues,
    MiceDocumentStates,
    MiceForSequenceClassification,
    MiceModel,
    MiceModelOutput,
    MicePreTrainedModel,
    MiceQueryScorer,
    MiceSequenceClassifierOutput,
)
from .passages import LongDocuments, aggregate_passage_scores, tokenize_passages

AutoConfig.register(MiceConfig.model_type, MiceConfig, exist_ok=True)
AutoModel.register(MiceConfig, MiceModel, exist_ok=True)
AutoModelForSequenceClassification.register(MiceConfig, MiceForSequenceClassification, exist_ok=True)
MiceConfig.register_for_auto_class()
MiceModel.register_for_auto_class("AutoModel")
MiceForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "SUPPORTED_ENCODERS",
    "LongDocuments",
    "MiceConfig",
    "MiceDocumentEncoder",
    "MiceDocumentKeyValues",
    "MiceDocumentStates",
    "MiceForSequenceClassification",
    "MiceModel",
    "MiceModelOutput",
    "MicePreTrainedModel",
    "MiceQueryScorer",
    "MiceSequenceClassifierOutput",
    "aggregate_passage_scores",
    "tokenize_passages",
]
