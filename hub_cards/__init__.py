"""Hub cards (model, teacher-score dataset, Space, Entity Lens task vectors) rendered from recorded runs, and push
helpers."""

from .dataset_card import render_dataset_card
from .embedder_card import render_embedder_card
from .model_card import render_model_card
from .push import PushError, PushResult, check_model_folder, push_model, push_teacher_dataset
from .records import (
    EvaluationResults,
    RecordError,
    TeacherDataset,
    read_embedder_record,
    read_evaluation,
    read_latency,
    read_teacher_dataset,
    read_training_record,
)
from .space_card import render_space_card
from .task_vectors import push_task_vectors, render_task_vector_card

__all__ = [
    "EvaluationResults",
    "PushError",
    "PushResult",
    "RecordError",
    "TeacherDataset",
    "check_model_folder",
    "push_model",
    "push_task_vectors",
    "push_teacher_dataset",
    "read_embedder_record",
    "read_evaluation",
    "read_latency",
    "read_teacher_dataset",
    "read_training_record",
    "render_dataset_card",
    "render_embedder_card",
    "render_model_card",
    "render_space_card",
    "render_task_vector_card",
]
