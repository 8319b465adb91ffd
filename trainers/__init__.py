"""Distillation trainers for cross-encoders and MICE: objectives, MICE-aware batching, the trainer, teacher-score
datasets (builders, teachers, candidate mining, importers) and the run record."""

from .batching import BatchScores, ListwiseDataCollator, find_mice_model, score_lists
from .candidates import CandidateList, candidates_from_run_file, mine_bm25_candidates
from .frozen_documents import DocumentStateMemo, freeze_independent_layers, independent_layers_frozen
from .importers import import_hofstaetter_scores, import_trec_run
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
from .teacher_data import TeacherDataError, TeacherDataset, build_from_beir, build_teacher_dataset
from .teachers import (
    BiEncoderTeacher,
    BM25Teacher,
    CallableTeacher,
    CrossEncoderTeacher,
    EnsembleTeacher,
    MiceTeacher,
    Teacher,
)
from .trainer import DistillationTrainer, DistillationTrainingArguments, validate_rows
from .training_record import TRAINING_RECORD, build_training_record, write_training_record

__all__ = [
    "ADRMSELoss",
    "BM25Teacher",
    "BatchScores",
    "BiEncoderTeacher",
    "CallableTeacher",
    "CandidateList",
    "CombinedLoss",
    "CrossEncoderTeacher",
    "DistillRankNetLoss",
    "DocumentStateMemo",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "EnsembleTeacher",
    "HingeLoss",
    "InfoNCELoss",
    "KLDivergenceLoss",
    "ListwiseDataCollator",
    "MarginMSELoss",
    "MiceTeacher",
    "PointwiseBCELoss",
    "PointwiseMSELoss",
    "TRAINING_RECORD",
    "Teacher",
    "TeacherDataError",
    "TeacherDataset",
    "build_from_beir",
    "build_teacher_dataset",
    "build_training_record",
    "candidates_from_run_file",
    "find_mice_model",
    "freeze_independent_layers",
    "import_hofstaetter_scores",
    "import_trec_run",
    "independent_layers_frozen",
    "mine_bm25_candidates",
    "score_lists",
    "validate_rows",
    "write_training_record",
]
