"""Distillation trainers for cross-encoders and MICE: objectives, MICE-aware batching, the trainer, run records."""

from .batching import BatchScores, ListwiseDataCollator, find_mice_model, score_lists
from .losses import (
    ADRMSELoss,
    CombinedLoss,
    DistillRankNetLoss,
    HingeLoss,
    InfoNCELoss,
    KLDivergenceLoss,
    MarginMSELoss,
    PointwiseBCELoss,
    PointwiseMSELoss,
)
from .trainer import DistillationTrainer, DistillationTrainingArguments, validate_rows

__all__ = [
    "ADRMSELoss",
    "BatchScores",
    "CombinedLoss",
    "DistillRankNetLoss",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "HingeLoss",
    "InfoNCELoss",
    "KLDivergenceLoss",
    "ListwiseDataCollator",
    "MarginMSELoss",
    "PointwiseBCELoss",
    "PointwiseMSELoss",
    "find_mice_model",
    "score_lists",
    "validate_rows",
]
