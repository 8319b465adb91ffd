"""The main job: teacher scores, a cross-encoder distilled from them, MICE converted from that cross-encoder, a
light dual encoder distilled from it too, and everything evaluated side by side with each one's budget: BM25, the
cross-encoder, MICE and the teacher re-ranking BM25; BM25, the light dual encoder, all-MiniLM-L6-v2 and their hybrids
as first stages; and the whole pipeline, hybrid retrieval then MICE, against BM25 then MICE.

Every step writes its outputs under ``--output`` and a marker in ``steps/`` when it is complete; a re-run skips the
finished steps, and an interrupted training run restarts from its last checkpoint. Each step calls a package's API:
``ranking_data.teacher_data.build_from_beir``, ``trainers.train``, ``trainers.conversion.convert``,
``embeddings.distill_embedder``, ``evaluation.first_stage`` and ``evaluation.harness.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ranking_data.work_folders import claim_folder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from ranking_data.beir import BeirData
    from ranking_data.teachers import BiEncoderTeacher, EnsembleTeacher

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data" / "debian"
ON_INTERRUPT = (
    "interrupted: run the same command again to resume (finished steps are skipped, training restarts from its last "
    "checkpoint)"
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """How big the quickstart is. ``cpu``: the packaged sample on 2 CPU cores (14 minutes in a clean clone's virtual
    environment on this project's 2-core host, docs/results.md "Quickstart"); ``gpu``: a real run (not measured
    yet)."""

    candidates: int  # BM25 candidates scored by the teacher per training query
    teacher_queries: int | None  # train queries the teacher scores (a seeded sample; None: all of them)
    teacher_max_length: int | None  # bi-encoder teacher tokens per text (None: the model's own limit)
    list_size: int  # documents per query in a training list
    batch_size: int  # queries per training step
    cross_encoder_steps: int
    cross_encoder_learning_rate: float
    head_learning_rate: float  # the new classification head starts from random weights
    warmup_steps: int
    # MICE is converted from the trained cross-encoder (trainers.conversion): the cross-encoder scores the BM25
    # candidates of this many train queries (no labels read), and MICE learns to rank like it above its frozen
    # independent layers, so a conversion step costs a small fraction of a cross-encoder step.
    conversion_queries: int
    conversion_held_out: int  # more queries, kept out of the conversion to measure MICE's agreement with its parent
    conversion_steps: int
    conversion_learning_rate: float
    # The light dual encoder (embeddings.distillation, its "quickstart" preset) learns from the cross-encoder's scores
    # that the conversion computed anyway, and the labelled positives of those queries: no extra scoring.
    embedder_steps: int
    max_query_length: int
    max_document_length: int
    fusion_layer: int
    interaction_layers: int
    eval_depth: int  # BM25 candidates re-ranked per test query
    latency_depths: tuple[int, ...]
    latency_queries: int
    # The teacher's scores for the dev split, and the models' loss on them before and after training (in the cards).
    dev_loss: bool = True
    # A few hundred steps learn faster without dropout and without clipping (dev nDCG@10 in docs/results.md).
    dropout: float | None = None  # every dropout probability of the backbone (None: the backbone's own)
    max_grad_norm: float = 1.0  # 0: no gradient clipping
    bf16: bool = False
    embedder_batch_size: int | None = None  # None: the embedder preset's


FIRST_STAGE_K = 1000  # documents each first stage retrieves (R@100 over them; MICE re-ranks the top eval_depth)
FIRST_STAGE_METRICS = ("ndcg@10", "recall@100")
SPEED_DOCUMENTS, SPEED_ROUNDS = 256, 2  # the dual encoders' encoding speed: this many documents, in turns
DUAL_ENCODERS = ("light dual encoder", "all-MiniLM-L6-v2")
HYBRIDS = tuple(f"BM25 + {name}" for name in DUAL_ENCODERS)  # the first is the pipeline's first stage
PIPELINES = ("BM25 → MICE", f"{HYBRIDS[0]} → MICE")
# Each pipeline is also reported with its re-ranked top interpolated with its first stage, (1 - w) × MICE + w × first
# stage, both min-max normalised per query (ranking_data.fusion.interpolate). w = 0.5 was tuned on debian-known-item's
# dev split (500 queries, both pipelines peaked there: docs/results.md); the sample's test queries are from that
# collection's test split, so the weight was not tuned on them.
INTERPOLATION_WEIGHT = 0.5
INTERPOLATED = tuple(f"{name}, interpolated {INTERPOLATION_WEIGHT:g}" for name in PIPELINES)

# The cross-encoder is distilled with MarginMSE on the teacher's scores plus InfoNCE on the known item (the labelled
# positive): the teacher's own MRR@10 on the sample's dev lists is only 0.84. The teacher's scores are min-max
# normalised per query, so MarginMSE keeps the logits' margins within about 1; InfoNCE's scale of 5 (a temperature of
# 0.2) keeps its softmax from being nearly uniform over such margins.
OBJECTIVES = ({"name": "margin_mse"}, {"name": "info_nce", "scale": 5.0})

PRESETS = {
    "cpu": Preset(
        candidates=20,
        # 80 steps × 8 queries read 640 lists: scoring all 2,769 train queries cost 102 s for lists never read
        # (session 11, when the job took 16 min on a slower host).
        teacher_queries=800,
        teacher_max_length=128,
        list_size=8,
        batch_size=8,
        # Enough to beat BM25: on the sample's dev split a 150-step run scored nDCG@10 0.729 at step 25, 0.877 at 50
        # and 0.881 at 75, against BM25's 0.855 (docs/results.md); 8 steps (the old preset) gave 0.41 on test.
        cross_encoder_steps=80,
        cross_encoder_learning_rate=1e-4,
        head_learning_rate=2e-3,
        warmup_steps=20,
        # The cross-encoder's scoring of 700 queries took 280 s of the conversion's 440 s (session 9, quiet host),
        # which put the job at 16 min 20 s; 350 queries keep it under 15 minutes.
        conversion_queries=300,
        conversion_held_out=50,
        conversion_steps=250,
        conversion_learning_rate=1e-4,
        embedder_steps=150,  # the embedder preset's (embeddings.distillation.PRESETS["quickstart"])
        max_query_length=32,
        max_document_length=96,
        # MICE-ℓ2+2: fusing at layer 2 kept more of the ranking than layer 3 on the sample's dev split
        # (docs/results.md), and the same four layers run for a query.
        fusion_layer=2,
        interaction_layers=2,
        eval_depth=20,
        latency_depths=(10, 20, 50),
        latency_queries=5,
        dev_loss=False,  # its teacher scores and dev passes cost about 90 s, better spent on cross-encoder steps
        dropout=0.0,
        max_grad_norm=0.0,
    ),
    "gpu": Preset(
        candidates=100,
        teacher_queries=None,
        teacher_max_length=None,
        list_size=16,
        batch_size=32,
        cross_encoder_steps=3000,
        cross_encoder_learning_rate=2e-5,
        head_learning_rate=1e-4,
        warmup_steps=300,
        conversion_queries=2000,
        conversion_held_out=200,
        conversion_steps=2000,
        conversion_learning_rate=1e-4,
        embedder_steps=1000,
        max_query_length=32,
        max_document_length=256,
        fusion_layer=2,  # better than 3 with every layer trained too (the session-7 grid, docs/results.md)
        interaction_layers=2,
        eval_depth=100,
        latency_depths=(10, 50, 100, 200),
        latency_queries=50,
        bf16=True,
    ),
}


class Steps:
    """Completion markers: a step is done once its marker exists, and the marker holds what the step recorded."""

    def __init__(self, output: Path):
        self.folder = output / "steps"
        self.folder.mkdir(parents=True, exist_ok=True)

    def done(self, name: str) -> dict | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def finish(self, name: str, record: dict) -> dict:
        temporary = self.folder / f".{name}.json.tmp"
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.folder / f"{name}.json")
        return record


def first_stage_max_length(preset: Preset) -> int:
    """Tokens per text of the teacher's bi-encoder and of the light dual encoder, so that the two dual encoders are
    compared at the same length."""
    return preset.teacher_max_length or 256


def cached_offline_teacher(retriever, data: BeirData, preset: Preset, cache: Path) -> EnsembleTeacher:
    """The offline teacher (BM25 + the packaged all-MiniLM-L6-v2), its bi-encoder's corpus embeddings read from
    ``cache`` or written there: the teacher data, the all-MiniLM-L6-v2 first stage and the teacher's evaluation
    share one encoding of the corpus."""
    from evaluation.first_stage import DenseFirstStage
    from ranking_data.teachers import offline_teacher

    teacher = offline_teacher(retriever, max_seq_length=first_stage_max_length(preset))
    bi_encoder = teacher_bi_encoder(teacher)
    stage = DenseFirstStage(bi_encoder.model, cache_folder=cache)
    bi_encoder.add_document_embeddings(*stage.document_embeddings(data)[:2])
    return teacher


def packaged_minilm(preset: Preset) -> SentenceTransformer:
    """The packaged all-MiniLM-L6-v2 as the offline teacher uses it (same token limit, so the same cached
    embeddings)."""
    from sentence_transformers import SentenceTransformer

    from trainers.training import default_backbone

    model = SentenceTransformer(default_backbone())
    model.max_seq_length = first_stage_max_length(preset)
    return model


def teacher_bi_encoder(teacher: EnsembleTeacher) -> BiEncoderTeacher:
    from ranking_data.teachers import BiEncoderTeacher

    return next(member for member in teacher.teachers if isinstance(member, BiEncoderTeacher))


def build_teacher_data(data: Path, output: Path, cache: Path, preset: Preset, split: str) -> dict:
    """BM25 candidates of the ``split`` queries, scored by the offline teacher (BM25 + MiniLM bi-encoder)."""
    from ranking_data.beir import load_beir
    from ranking_data.teacher_data import build_from_beir

    collection = load_beir(data, split)
    dataset = build_from_beir(
        data,
        output / split,
        split=split,
        depth=preset.candidates,
        max_queries=preset.teacher_queries,
        seed=12,
        teacher=lambda retriever: cached_offline_teacher(retriever, collection, preset, cache),
    )
    return {"folder": str(output / split), "queries": len(dataset.train), "documents": len(dataset.documents)}


def train_cross_encoder(backbone: str, teacher: Path, output: Path, preset: Preset, seed: int) -> dict:
    """Distil the cross-encoder from the teacher (``OBJECTIVES``); resumes from its last checkpoint."""
    from trainers import DistillationConfig, DistillationTrainingArguments, ModelConfig, TrainConfig
    from trainers import train as train_model

    steps = preset.cross_encoder_steps
    config = TrainConfig(
        model=ModelConfig(
            model_type="cross-encoder",
            backbone=backbone,
            max_query_length=preset.max_query_length,
            max_document_length=preset.max_document_length,
            max_length=preset.max_query_length + preset.max_document_length,
            dropout=preset.dropout,
        ),
        distillation=DistillationConfig(
            teacher_data=str(teacher / "train"),
            eval_teacher_data=str(teacher / "dev") if preset.dev_loss else None,
            objectives=list(OBJECTIVES),
            list_size=preset.list_size,
            sampling="random",
            require_positive=True,
        ),
        training=DistillationTrainingArguments(
            output_dir=str(output),
            max_steps=steps,
            per_device_train_batch_size=preset.batch_size,
            per_device_eval_batch_size=preset.batch_size,
            learning_rate=preset.cross_encoder_learning_rate,
            head_learning_rate=preset.head_learning_rate,
            warmup_steps=min(preset.warmup_steps, steps // 10),
            max_grad_norm=preset.max_grad_norm,
            bf16=preset.bf16,
            seed=seed,
            data_seed=seed,
            save_steps=max(steps // 3, 1),
            save_total_limit=2,
            logging_steps=max(steps // 10, 1),
            report_to=[],
        ),
    )
    result = train_model(config)
    budget = f"{steps} steps × {preset.batch_size} queries × {preset.list_size} documents (teacher scores + labels)"
    return {"folder": str(output), "final_train_loss": result.record["final_train_loss"], "budget": budget}


def convert_to_mice(
    data: Path, cross_encoder: Path, output: Path, parent_scores: Path, preset: Preset, seed: int
) -> dict:
    """MICE converted from the trained cross-encoder on the collection's train queries (no labels read); the
    cross-encoder's scores are kept in ``parent_scores`` for the light dual encoder."""
    from trainers.conversion import ConversionConfig, convert

    result = convert(
        ConversionConfig(
            cross_encoder=str(cross_encoder),
            data=str(data),
            output=str(output),
            parent_scores=str(parent_scores),
            fusion_layer=preset.fusion_layer,
            interaction_layers=preset.interaction_layers,
            steps=preset.conversion_steps,
            queries="dataset",
            max_queries=preset.conversion_queries,
            held_out_queries=preset.conversion_held_out,
            depth=preset.candidates,
            batch_size=preset.batch_size,
            learning_rate=preset.conversion_learning_rate,
            max_query_length=preset.max_query_length,
            # No max_document_length: the student reads as much of each document as the cross-encoder reads beside
            # a short query (trainers.conversion.student_document_length), not the preset's document share.
            bf16=preset.bf16,
            seed=seed,
        )
    )
    conversion = result.record["conversion"]
    budget = (
        f"{preset.conversion_steps} steps × {preset.batch_size} queries; the cross-encoder scored "
        f"{preset.conversion_queries} train queries × {preset.candidates} BM25 candidates; no labels"
    )
    return {"folder": result.output, "agreement_with_parent": conversion["agreement_with_parent"], "budget": budget}


def distill_light_dual_encoder(
    data: Path, cross_encoder: Path, parent_scores: Path, output: Path, preset: Preset, seed: int
) -> dict:
    """The light dual encoder (DE-2: the cross-encoder's embeddings and first layer, one layer seeded from its last)
    trained on the cross-encoder's scores of the conversion's queries, and on the packaged all-MiniLM-L6-v2's
    embeddings of their texts where it is as wide; resumes from its last checkpoint."""
    from embeddings.distillation import config_from_preset, distill_embedder, read_embedder_record

    config = config_from_preset(
        "quickstart",
        cross_encoder=str(cross_encoder),
        data=str(data),
        output=str(output),
        teacher_data=str(parent_scores),
        max_steps=preset.embedder_steps,
        batch_size=preset.embedder_batch_size,
        max_length=first_stage_max_length(preset),
        embedding_teacher=embedding_teacher_for(cross_encoder),
        seed=seed,
    )
    distill_embedder(config, show_progress=False)
    record = read_embedder_record(output)
    budget = (
        f"{config.max_steps} steps × {config.batch_size} rows (query, positive, {config.negatives} negative) from "
        f"{record['data']['train_rows']} queries the cross-encoder scored for the conversion"
    )
    if config.embedding_teacher:
        budget += f", in turns with all-MiniLM-L6-v2's embeddings of their {record['data']['embedding_texts']} texts"
    return {"folder": str(output), "final_train_loss": record["final_train_loss"], "budget": budget}


def embedding_teacher_for(cross_encoder: Path) -> str | None:
    """The packaged all-MiniLM-L6-v2, whose embeddings the light dual encoder learns too (0.727 → 0.767 nDCG@10 on
    the sample, docs/results.md), when its embeddings are as wide as the cross-encoder's; else None."""
    from transformers import AutoConfig

    from trainers.training import default_backbone

    teacher = default_backbone()
    if AutoConfig.from_pretrained(teacher).hidden_size != AutoConfig.from_pretrained(cross_encoder).hidden_size:
        logger.info(
            "the light dual encoder distils no embeddings: all-MiniLM-L6-v2 is not as wide as %s", cross_encoder
        )
        return None
    return teacher


def dual_encoder_stages(embedder: Path, minilm: SentenceTransformer, cache: Path) -> dict:
    """The first stages compared: BM25, the light dual encoder, the teacher's own all-MiniLM-L6-v2 (same token
    limit) and each dense one fused with BM25. Document embeddings are cached in ``cache``."""
    from evaluation.first_stage import BM25FirstStage, DenseFirstStage, HybridFirstStage

    bm25 = BM25FirstStage()
    dense = [DenseFirstStage(embedder, cache_folder=cache), DenseFirstStage(minilm, cache_folder=cache)]
    hybrids = [HybridFirstStage(stage, bm25=bm25) for stage in dense]
    return {"bm25": bm25, **dict(zip(DUAL_ENCODERS + HYBRIDS, dense + hybrids, strict=True))}


def compare_first_stages(data: Path, embedder: Path, output: Path, cache: Path, preset: Preset) -> dict:
    """Every first stage of ``dual_encoder_stages`` on the test split: nDCG@10 and R@100 with paired t-tests, the
    dense encoders' documents per second (in turns), and each run as a TREC file for the pipeline step."""
    from embeddings.speed import encoding_speed, median_speed
    from evaluation.harness import write_json
    from evaluation.metrics import compare_runs
    from ranking_data.beir import load_beir, write_trec_run

    test = load_beir(data, "test")
    stages = dual_encoder_stages(embedder, packaged_minilm(preset), cache)
    runs, details = {}, {}
    (output / "runs" / "first-stages").mkdir(parents=True, exist_ok=True)
    for name, stage in tqdm(stages.items(), desc="first stages", leave=False):
        retrieved = stage.retrieve(test, FIRST_STAGE_K)
        runs[name] = retrieved.run
        details[name] = {"description": stage.describe(), "ms_per_query": retrieved.ms_per_query, **retrieved.details}
        write_trec_run(retrieved.run, output / "runs" / "first-stages" / f"{_slug(name)}.trec", tag=_slug(name))
    comparison = compare_runs(test.qrels, runs, FIRST_STAGE_METRICS)
    # The corpus encodings above ran in different steps (all-MiniLM-L6-v2's for the teacher data), so the two dual
    # encoders are timed again here, in turns on the same documents.
    texts = [test.document_text(doc_id) for doc_id in list(test.corpus)[:SPEED_DOCUMENTS]]
    speeds = encoding_speed({name: stages[name].model for name in DUAL_ENCODERS}, texts, rounds=SPEED_ROUNDS)
    record = {
        "queries": len(test.queries),
        "documents": len(test.corpus),
        "max_length": first_stage_max_length(preset),
        "k": FIRST_STAGE_K,
        "systems": details,
        **{key: comparison[key] for key in ("scores", "p_values", "test")},
        "encoding_speed": {
            "documents": len(texts),
            "rounds": SPEED_ROUNDS,
            "documents_per_s": median_speed(speeds),
            "documents_per_s_per_round": speeds,
        },
    }
    write_json(record, output / "first_stages.json")
    return {"first_stages": str(output / "first_stages.json")}


def evaluate_pipeline(data: Path, mice: Path, output: Path, preset: Preset) -> dict:
    """The whole pipeline: MICE re-ranking the hybrid (BM25 + light dual encoder) first stage's top documents,
    compared query by query with MICE re-ranking BM25's (the ``evaluate`` step's run), each also interpolated with
    the first stage it re-ranked (:data:`INTERPOLATION_WEIGHT`)."""
    from evaluation.harness import EvaluationConfig, write_json
    from evaluation.harness import evaluate as evaluate_systems
    from evaluation.metrics import compare_runs
    from ranking_data.beir import load_beir, read_trec_run
    from ranking_data.fusion import interpolate

    test = load_beir(data, "test")
    hybrid = output / "runs" / "first-stages" / f"{_slug(HYBRIDS[0])}.trec"
    report = evaluate_systems(
        EvaluationConfig(
            data=[str(data)],
            models=[f"mice:{mice}"],
            run_files=[str(hybrid)],
            depth=preset.eval_depth,
            runs_folder=str(output / "runs" / "hybrid"),
            progress=False,
        )
    )
    name = test.name
    runs, first_stages = {}, {}
    for pipeline, (folder, first_stage) in zip(PIPELINES, (("bm25", "bm25"), ("hybrid", "first-stage")), strict=True):
        runs[pipeline] = read_trec_run(output / "runs" / folder / name / "mice.trec")
        first_stages[pipeline] = read_trec_run(output / "runs" / folder / name / f"{first_stage}.trec")
    for pipeline, interpolated in zip(PIPELINES, INTERPOLATED, strict=True):
        runs[interpolated] = interpolate(
            first_stages[pipeline], runs[pipeline], preset.eval_depth, INTERPOLATION_WEIGHT
        )
    comparison = compare_runs(test.qrels, runs, FIRST_STAGE_METRICS)
    record = {
        "depth": preset.eval_depth,
        "interpolation_weight": INTERPOLATION_WEIGHT,
        "queries": len(test.queries),
        **{key: comparison[key] for key in ("scores", "p_values", "test", "max_p")},
        "mice_ms_per_query": report["results"]["mice"][name]["latency"]["mean_ms"],
    }
    write_json(record, output / "pipeline.json")
    return {"pipeline": str(output / "pipeline.json")}


def _slug(name: str) -> str:
    return name.lower().replace(" + ", "-").replace(" ", "-")


def evaluate(data: Path, models: dict[str, Path], output: Path, cache: Path, preset: Preset) -> dict:
    """BM25, the cross-encoder, MICE and the teacher on the test split, plus the latency curve, as JSON, markdown and
    plots."""
    from evaluation.harness import EvaluationConfig, bm25_first_stage, latency_curve, write_json
    from evaluation.harness import evaluate as evaluate_systems
    from evaluation.report import plot_effectiveness, plot_latency, write_markdown
    from evaluation.rerankers import TeacherReranker, load_reranker
    from ranking_data.beir import load_beir
    from ranking_data.bm25 import BM25Retriever

    test = load_beir(data, "test")
    teacher = cached_offline_teacher(BM25Retriever().index(test.corpus), test, preset, cache)
    specs = [f"{'mice' if name == 'mice' else 'ce'}:{folder}" for name, folder in models.items()]
    report = evaluate_systems(
        EvaluationConfig(
            data=[str(data)],
            models=["bm25", *specs],
            split="test",
            depth=preset.eval_depth,
            runs_folder=str(output / "runs" / "bm25"),
        ),
        systems={"teacher": TeacherReranker(teacher, teacher_bi_encoder(teacher).model)},
    )
    write_json(report, output / "evaluation.json")
    for folder in models.values():  # the model cards read the figures from the model folder
        write_json(report, folder / "evaluation.json")

    candidates, _ = bm25_first_stage(test, max(preset.latency_depths), show_progress=False)
    curves = {}
    for spec in specs:
        reranker = load_reranker(spec, show_progress=False)
        curves[spec.partition(":")[2].rstrip("/").rsplit("/", 1)[-1]] = latency_curve(
            reranker, test, candidates, list(preset.latency_depths), max_queries=preset.latency_queries
        )
    report_folder = output / "report"
    write_markdown(report, report_folder / "evaluation.md")
    plot_effectiveness(report, report_folder / "effectiveness.png")
    plot_latency(curves, report_folder / "latency.png")
    (report_folder / "latency.json").write_text(json.dumps(curves, indent=2) + "\n", encoding="utf-8")
    return {"evaluation": str(output / "evaluation.json"), "report": str(report_folder)}


def standing(score: float, other: float) -> str:
    """``"above"``, ``"level with"`` or ``"below"``: ``score`` against ``other`` at the three decimals shown."""
    score, other = round(score, 3), round(other, 3)
    return "above" if score > other else "level with" if score == other else "below"


def versus_bm25(cross_encoder: float, bm25: float, significance: dict) -> str:
    """One plain sentence: is the cross-encoder above BM25, at the precision shown and by the paired t-test?"""
    p = significance["p_values"]["bm25"]["cross-encoder"]["ndcg@10"]
    figures = f"{cross_encoder:.3f} vs {bm25:.3f}, paired t-test p = {p:.2g}"
    where = standing(cross_encoder, bm25)
    if where == "above":
        verdict = "significantly" if p < significance["max_p"] else "but not significantly"
        return f"The cross-encoder is above BM25, {verdict} ({figures})."
    return (
        f"At this budget the cross-encoder is NOT above BM25: it is {where} it ({figures}); train it longer "
        "(--cross-encoder-steps)."
    )


def first_stage_lines(output: Path, steps: dict) -> list[str]:
    """The report's first-stage table (with each system's budget and encoding speed) and the pipeline comparison."""
    first = json.loads((output / "first_stages.json").read_text(encoding="utf-8"))
    pipeline = json.loads((output / "pipeline.json").read_text(encoding="utf-8"))
    budgets = {
        "bm25": "bm25s, no training",
        "light dual encoder": f"{steps['distill-embedder']['budget']}, {steps['distill-embedder']['seconds']:.0f} s",
        "all-MiniLM-L6-v2": "packaged, 6 layers; trained by sentence-transformers on over a billion pairs",
    }
    speed = first["encoding_speed"]
    lines = [
        "## First stage and the whole pipeline",
        "",
        f"The light dual encoder is the cross-encoder's embeddings and first layer plus a layer seeded from its last, "
        f"trained as a dual encoder on what its budget names (`embeddings.distill_embedder`). Test split, {first['queries']} "
        f"queries, exact inner product over all {first['documents']} documents, both dual encoders at "
        f"{first['max_length']} tokens; hybrids fuse per-query min-max normalised scores with equal weights. p: "
        f"paired t-test against BM25. Documents / s: median of {speed['rounds']} rounds on {speed['documents']} "
        "documents, the two dual encoders taking turns.",
        "",
        "| first stage | budget | nDCG@10 | p | R@100 | p | documents / s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in first["systems"]:
        p_values = first["p_values"][name].get("bm25")
        cells = [
            f"{first['scores'][name][metric]:.3f} | {f'{p_values[metric]:.2g}' if p_values else '–'}"
            for metric in FIRST_STAGE_METRICS
        ]
        rate = speed["documents_per_s"].get(name)
        budget = budgets.get(name, "fused with BM25, no training")
        lines.append(f"| {name} | {budget} | {' | '.join(cells)} | {f'{rate:.0f}' if rate else '–'} |")
    light, minilm = (first["scores"][name] for name in DUAL_ENCODERS)
    ratio = operator.truediv(*(speed["documents_per_s"][name] for name in DUAL_ENCODERS))
    lines += [
        "",
        f"The light dual encoder keeps {light['ndcg@10'] / minilm['ndcg@10']:.1%} of all-MiniLM-L6-v2's nDCG@10 "
        f"({light['ndcg@10']:.3f} vs {minilm['ndcg@10']:.3f}) and encodes documents {ratio:.1f}× faster.",
        "",
        f"| pipeline (MICE re-ranks the first stage's top {pipeline['depth']}) | nDCG@10 | R@100 |",
        "|---|---:|---:|",
        *(
            f"| {name} | {pipeline['scores'][name]['ndcg@10']:.3f} | {pipeline['scores'][name]['recall@100']:.3f} |"
            for name in (*PIPELINES, *INTERPOLATED)
            if name in pipeline["scores"]  # an output of an earlier version has no interpolated pipeline
        ),
        "",
        versus_pipeline(pipeline, PIPELINES[1], PIPELINES[0]),
    ]
    if "interpolation_weight" in pipeline:
        lines += [
            "",
            f"Interpolated: the re-ranked top {pipeline['depth']} scored (1 − w) × MICE + w × first stage, both "
            f"normalised per query, w = {pipeline['interpolation_weight']:g} (tuned on debian-known-item's dev "
            "split). " + versus_pipeline(pipeline, INTERPOLATED[0], PIPELINES[0]),
            "",
            versus_pipeline(pipeline, INTERPOLATED[1], INTERPOLATED[0]),
        ]
    return lines


def versus_pipeline(pipeline: dict, ours: str, theirs: str) -> str:
    """One plain sentence per metric: does pipeline ``ours`` beat ``theirs``, at the precision shown and by the test?"""
    verdicts = []
    for metric in FIRST_STAGE_METRICS:
        a, b = pipeline["scores"][ours][metric], pipeline["scores"][theirs][metric]
        p = pipeline["p_values"][ours][theirs][metric]
        significance = f"p = {p:.2g}" + (f" < {pipeline['max_p']:g}" if p < pipeline["max_p"] else "")
        verdicts.append(f"{metric} {standing(a, b)} ({a:.3f} vs {b:.3f}, {significance})")
    return f"{ours} against {theirs}: " + "; ".join(verdicts) + "."


def write_report(output: Path, records: dict) -> Path:
    """``report/report.md``: what was run, each system's budget, the figures, and the plots."""
    evaluation = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    dataset = next(iter(evaluation["datasets"]))
    steps = records["steps"]
    teacher_seconds = sum(record["seconds"] for name, record in steps.items() if name.startswith("teacher-"))
    budgets = {
        "bm25": "bm25s, no training",
        "teacher": f"BM25 + packaged all-MiniLM-L6-v2 bi-encoder, no training; scored the train lists in "
        f"{teacher_seconds:.0f} s; documents embedded ahead (the first-stage step's)",
        "cross-encoder": f"{steps['train-cross-encoder']['budget']}, {steps['train-cross-encoder']['seconds']:.0f} s",
        "mice": f"{steps['convert-mice']['budget']}, {steps['convert-mice']['seconds']:.0f} s",
    }
    lines = [
        "# mice-rerank quickstart",
        "",
        f"Collection `{dataset}` ({evaluation['datasets'][dataset]['documents']} documents), "
        f"{evaluation['datasets'][dataset]['queries']} held-out test queries, BM25 top-"
        f"{evaluation['settings']['depth']} re-ranked. The cross-encoder is distilled from the teacher; MICE is "
        f"converted from the cross-encoder, and a light dual encoder distilled from it too. Wall times on "
        f"{evaluation['settings']['torch_threads']} CPU thread(s) unless a GPU was used. Settings: `{json.dumps(records['settings'])}`.",
        "",
        "| system | budget | nDCG@10 | MRR@10 | R@100 | MAP | ms / query (mean) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for system, results in evaluation["results"].items():
        entry = results[dataset]
        metrics = entry["metrics"]
        latency = entry.get("latency", {}).get("mean_ms")
        lines.append(
            f"| {system} | {budgets.get(system, '')} | {metrics['ndcg@10']:.3f} | {metrics['mrr@10']:.3f} | "
            f"{metrics['recall@100']:.3f} | {metrics['map']:.3f} | {'—' if latency is None else f'{latency:.1f}'} |"
        )
    agreement = steps["convert-mice"]["agreement_with_parent"]
    results = {system: entry[dataset] for system, entry in evaluation["results"].items()}
    ndcg = {system: entry["metrics"]["ndcg@10"] for system, entry in results.items()}
    cross_encoder_ms = results["cross-encoder"]["latency"]["mean_ms"]
    mice_ms = results["mice"]["latency"]["mean_ms"]
    lines += [
        "",
        f"MICE keeps {ndcg['mice'] / ndcg['cross-encoder']:.1%} of its parent cross-encoder's nDCG@10 and re-ranks "
        f"{cross_encoder_ms / mice_ms:.1f}× faster ({mice_ms:.1f} vs {cross_encoder_ms:.1f} ms per query, documents "
        "encoded ahead of the queries). "
        + versus_bm25(ndcg["cross-encoder"], ndcg["bm25"], evaluation["significance"][dataset]),
        "",
        "MICE against the cross-encoder it was converted from, on held-out train queries (no labels): "
        + ", ".join(f"{key} {value:.3f}" for key, value in agreement.items() if isinstance(value, float))
        + ".",
        "",
        *first_stage_lines(output, steps),
        "",
        "![effectiveness](effectiveness.png)",
        "",
        "![latency](latency.png)",
        "",
        "Per-system details and significance tests: [evaluation.md](evaluation.md). Step timings (s): "
        + ", ".join(f"{name} {record['seconds']:.0f}" for name, record in steps.items())
        + ".",
        "",
        f"The trained models are in `{output / 'models'}`; push them with `python scripts/push_to_hub.py`.",
    ]
    path = output / "report" / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_quickstart(
    output: Path, preset_name: str = "cpu", data: Path = SAMPLE_DATA, backbone: str | None = None, **overrides
) -> Path:
    """Run (or resume) the whole quickstart; returns the report's path."""
    preset = replace(PRESETS[preset_name], **{k: v for k, v in overrides.items() if v is not None})
    # Finished steps are skipped on a re-run: only a run with the same settings may resume this folder.
    settings = {"preset": preset_name, **asdict(preset), "data": str(Path(data).resolve()), "backbone": backbone}
    claim_folder(output, settings, "quickstart")
    if backbone is None:
        from trainers.training import default_backbone

        backbone = default_backbone()
    steps = Steps(output)
    models = {"cross-encoder": output / "models" / "cross-encoder", "mice": output / "models" / "mice"}
    embedder = output / "models" / "embedder"
    teacher, parent_scores = output / "teacher_dataset", output / "parent_scores"
    cache = output / "cache" / "dense"  # the dual encoders' corpus embeddings (evaluation.first_stage)
    plan = {"teacher-train": lambda: build_teacher_data(data, teacher, cache, preset, "train")}
    if preset.dev_loss:
        plan["teacher-dev"] = lambda: build_teacher_data(data, teacher, cache, preset, "dev")
    plan["train-cross-encoder"] = lambda: train_cross_encoder(
        backbone, teacher, models["cross-encoder"], preset, seed=12
    )
    plan["convert-mice"] = lambda: convert_to_mice(
        data, models["cross-encoder"], models["mice"], parent_scores, preset, seed=12
    )
    plan["distill-embedder"] = lambda: distill_light_dual_encoder(
        data, models["cross-encoder"], parent_scores, embedder, preset, seed=12
    )
    plan["compare-first-stages"] = lambda: compare_first_stages(data, embedder, output, cache, preset)
    plan["evaluate"] = lambda: evaluate(data, models, output, cache, preset)
    plan["evaluate-pipeline"] = lambda: evaluate_pipeline(data, models["mice"], output, preset)
    records: dict = {"settings": {"preset": preset_name, **asdict(preset)}, "steps": {}}
    for name, step in tqdm(plan.items(), desc="quickstart", unit="step"):
        record = steps.done(name)
        if record is None:
            started = time.perf_counter()
            record = steps.finish(name, {**step(), "seconds": time.perf_counter() - started})
        else:
            logger.info("step %s already done, skipped", name)
        records["steps"][name] = record
    return write_report(output, records)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("mice-quickstart"), help="where everything is written")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="cpu: minutes on 2 CPU cores; gpu: bigger"
    )
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA, help="BEIR folder with train, dev and test qrels")
    parser.add_argument("--backbone", help="encoder folder or Hub id (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--cross-encoder-steps", type=int, help="override the preset's cross-encoder training steps")
    parser.add_argument("--conversion-steps", type=int, help="override the preset's MICE conversion steps")
    parser.add_argument("--embedder-steps", type=int, help="override the preset's light dual encoder steps")


def run(args: argparse.Namespace) -> int:
    """``mice quickstart``: check the collection first (a bad folder fails in a second, not after minutes)."""
    from ranking_data.beir import load_beir

    for split in ("train", "test") + (("dev",) if PRESETS[args.preset].dev_loss else ()):
        load_beir(args.data, split)
    steps = {
        "cross_encoder_steps": args.cross_encoder_steps,
        "conversion_steps": args.conversion_steps,
        "embedder_steps": args.embedder_steps,
    }
    report = run_quickstart(args.output, args.preset, data=args.data, backbone=args.backbone, **steps)
    print(f"report: {report}")
    return 0
