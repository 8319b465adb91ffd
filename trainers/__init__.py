"""Distillation trainers for cross-encoders and MICE: the training API (``TrainConfig``, ``train``), the
objectives, the trainer with its MICE-aware batching, the frozen-document cache and the run record.

    from trainers import TrainConfig, train

    result = train(TrainConfig.from_file("run.yaml"))

Teacher-score datasets, teachers and candidate lists are the data layer below: ``ranking_data``.
"""

from .batching import (
    JointPairInputs,
    ListwiseDataCollator,
    MiceInputs,
    find_mice_model,
    list_inputs_for,
    score_inputs,
    score_lists,
)
from .config import ConfigError, DistillationConfig, ModelConfig, TrainConfig
from .frozen_documents import DocumentStateMemo, freeze_independent_layers, independent_layers_frozen
from .losses import (
    ADRMSELoss,
    CombinedLoss,
    DistillRankNetLoss,
    HingeLoss,
    InfoNCELoss,
    KLDivergenceLoss,
    ListScores,
    MarginMSELoss,
    PointwiseBCELoss,
    PointwiseMSELoss,
)
from .trainer import DistillationTrainer, DistillationTrainingArguments, validate_rows
from .training import TrainResult, build_loss, build_model, train
from .training_record import TRAINING_RECORD, build_training_record, write_training_record

__all__ = [
    "ADRMSELoss",
    "CombinedLoss",
    "ConfigError",
    "DistillRankNetLoss",
    "DistillationConfig",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "DocumentStateMemo",
    "HingeLoss",
    "InfoNCELoss",
    "JointPairInputs",
    "KLDivergenceLoss",
    "ListScores",
    "ListwiseDataCollator",
    "MarginMSELoss",
    "MiceInputs",
    "ModelConfig",
    "PointwiseBCELoss",
    "PointwiseMSELoss",
    "TRAINING_RECORD",
    "TrainConfig",
    "TrainResult",
    "build_loss",
    "build_model",
    "build_training_record",
    "find_mice_model",
    "freeze_independent_layers",
    "independent_layers_frozen",
    "list_inputs_for",
    "score_inputs",
    "score_lists",
    "train",
    "validate_rows",
    "write_training_record",
]
