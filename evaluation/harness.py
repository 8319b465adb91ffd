"""Re-rank a first-stage run on BEIR-layout folders with several systems and report effectiveness and latency.

``evaluate(EvaluationConfig(...))`` is what ``mice evaluate``, ``scripts/evaluate.py`` and the quickstart run. For
each folder it builds the first stage (BM25 with bm25s, a dense or hybrid retriever, or a TREC run file:
``evaluation.first_stage``), re-ranks its top ``depth`` documents
with every system, evaluates every run with ir-measures (the first stage included), runs paired t-tests (scipy)
between systems, and times each query's re-ranking.
A re-ranked run is the re-ranked top ``depth`` followed by the rest of the first-stage ranking in its order, so
R@100 and MAP stay comparable with the first stage at any depth.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from indexing.fingerprint import model_fingerprint
from modeling_mice import LongDocuments
from ranking_data.beir import BeirData, Run, load_beir, subsample_queries, top_documents, write_trec_run
from ranking_data.fusion import interpolate, with_rest_of_ranking

from .first_stage import FirstStage, bm25_first_stage, check_run, first_stage_from_spec  # noqa: F401 - re-exported
from .metrics import DEFAULT_METRICS, compare_runs
from .rerankers import MiceReranker, load_reranker

BM25 = "bm25"


@dataclass
class RerankResult:
    """A re-ranked run with its timings: per-query re-ranking milliseconds and one-off document preparation."""

    run: Run
    query_ms: list[float] = field(default_factory=list)
    documents_per_query: list[int] = field(default_factory=list)
    preparation_seconds: float = 0.0
    documents_prepared: int = 0


def summarize_latency(milliseconds: list[float]) -> dict[str, float]:
    """Mean, median and 95th percentile of per-query latencies (ms)."""
    if not milliseconds:
        return {"queries": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
    values = np.asarray(milliseconds)
    return {
        "queries": len(values),
        "mean_ms": float(values.mean()),
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
    }


def rerank(
    reranker, data: BeirData, candidates: Run, depth: int, chunk_queries: int = 32, show_progress: bool = True
) -> RerankResult:
    """Re-rank the top ``depth`` candidates of each query with ``reranker``; time each query.

    Queries are taken ``chunk_queries`` at a time: the reranker prepares (MICE: encodes) the documents of a chunk
    once, then scores query by query, then forgets them, so memory stays bounded on large collections.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    result = RerankResult(run={})
    query_ids = list(candidates)
    progress = tqdm(total=len(query_ids), desc=f"re-ranking {data.name}", disable=not show_progress, leave=False)
    for begin in range(0, len(query_ids), chunk_queries):
        chunk = query_ids[begin : begin + chunk_queries]
        tops = {query_id: top_documents(candidates[query_id], depth) for query_id in chunk}
        needed = {doc_id: data.document_text(doc_id) for top in tops.values() for doc_id in top}
        result.preparation_seconds += reranker.prepare(needed)
        result.documents_prepared += len(needed)
        for query_id in chunk:
            top = tops[query_id]
            reranked: dict[str, float] = {}
            if top:
                start = time.perf_counter()
                scores = reranker.score_query(data.queries[query_id], [needed[d] for d in top], top)
                result.query_ms.append(1000 * (time.perf_counter() - start))
                result.documents_per_query.append(len(top))
                reranked = dict(zip(top, scores, strict=True))
            result.run[query_id] = with_rest_of_ranking(reranked, candidates[query_id])
            progress.update()
        reranker.release()
    progress.close()
    return result


def latency_curve(
    reranker, data: BeirData, candidates: Run, depths: list[int], max_queries: int = 20, seed: int = 0
) -> list[dict[str, float]]:
    """Per-query re-ranking latency at several depths (for the latency-against-documents plot).

    Returns one ``{"documents", "mean_ms", "p50_ms", "p95_ms", "queries", "preparation_ms_per_document"}`` per depth.
    """
    sample = subsample_queries(data, max_queries, seed)
    candidates = {query_id: candidates.get(query_id, {}) for query_id in sample.queries}
    points = []
    for depth in depths:
        result = rerank(reranker, sample, candidates, depth, chunk_queries=len(candidates), show_progress=False)
        prepared = max(result.documents_prepared, 1)
        points.append(
            {
                "documents": depth,
                **summarize_latency(result.query_ms),
                "preparation_ms_per_document": 1000 * result.preparation_seconds / prepared,
            }
        )
    return points


def system_names(specs: list[str]) -> list[str]:
    """Short unique names for model specs: the folder name, or as many trailing path parts as needed to tell
    models apart (``runs/bce/mice`` and ``runs/hinge/mice`` become ``bce/mice`` and ``hinge/mice``)."""
    parts = [Path(spec.partition(":")[2] if spec.startswith(("ce:", "mice:")) else spec).parts for spec in specs]
    names = []
    for own in parts:
        for length in range(1, len(own) + 1):
            name = "/".join(own[-length:])
            if all(name != "/".join(other[-length:]) for other in parts if other != own):
                break
        while name in names or name == BM25:  # the same model given twice
            name += "'"
        names.append(name)
    return names


def _rerank_resumable(
    reranker, data: BeirData, candidates: Run, depth: int, record: Path | None, settings: dict, show_progress: bool
) -> RerankResult:
    """``rerank``, or the result recorded in ``record`` by an earlier call with the same settings."""
    if record is not None and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("settings") == settings:
            return RerankResult(**saved["result"])
    result = rerank(reranker, data, candidates, depth, show_progress=show_progress)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        temporary = record.with_suffix(".tmp")
        temporary.write_text(json.dumps({"settings": settings, "result": result.__dict__}), encoding="utf-8")
        temporary.rename(record)
    return result


def _file_name(system: str) -> str:
    return system.replace("/", "__").replace("'", "-again")


def package_versions() -> dict[str, str]:
    """Versions of the packages an evaluation depends on, for the record."""
    versions = {"python": platform.python_version()}
    for package in (
        "mice-rerank",
        "torch",
        "transformers",
        "sentence-transformers",
        "ir-measures",
        "scipy",
        "bm25s",
        "mteb",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class EvaluationConfig:
    """What ``evaluate`` runs: the collections, the systems and how they are compared (``mice evaluate`` flags)."""

    data: list[str] = field(metadata={"help": "BEIR-layout folders."})
    models: list[str] = field(
        default_factory=lambda: [BM25],
        metadata={"help": "bm25 (the first stage, evaluated anyway), ce:PATH, mice:PATH or a bare PATH / Hub id."},
    )
    split: str = field(default="test", metadata={"help": "The qrels split to evaluate (qrels/<split>.tsv)."})
    depth: int = field(default=100, metadata={"help": "First-stage documents each model re-ranks per query."})
    run_files: list[str] | None = field(
        default=None,
        metadata={"help": "A TREC run per data folder as the first stage instead of BM25.", "aliases": ["--run"]},
    )
    first_stage: str = field(
        default=BM25,
        metadata={
            "help": "bm25, dense:PATH or hybrid:PATH (PATH: a SentenceTransformer folder; evaluation.first_stage)."
        },
    )
    dense_weight: float = field(default=0.5, metadata={"help": "The dense side's weight in a hybrid first stage."})
    interpolate: float | None = field(
        default=None,
        metadata={
            "help": "Score each model's re-ranked top documents (1 - W) x model + W x first stage, both min-max "
            "normalised per query (ranking_data.fusion.interpolate); tune W on another split "
            "(scripts/interpolate_first_stage.py)."
        },
    )
    first_stage_k: int = field(
        default=1000, metadata={"help": "Documents the first stage retrieves (MAP and R@100 over them)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Documents scored per forward pass."})
    max_queries: int | None = field(
        default=None, metadata={"help": "Evaluate a reproducible sample of at most this many judged queries."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the query sample."})
    metrics: list[str] = field(
        default_factory=lambda: list(DEFAULT_METRICS), metadata={"help": "ir-measures metrics (names as in metrics)."}
    )
    max_p: float = field(default=0.05, metadata={"help": "Significance level of the paired t-tests."})
    baseline: str | None = field(
        default=None, metadata={"help": "The system significance markers refer to (default: the first stage)."}
    )
    device: str | None = field(default=None, metadata={"help": "Torch device of the models (default: automatic)."})
    cache_folder: str | None = field(
        default=None,
        metadata={
            "help": "Where MICE document states are stored (indexing.DocumentStore.at): a cache folder, or an index "
            "built by mice index.",
            "aliases": ["--cache"],
        },
    )
    runs_folder: str | None = field(
        default=None,
        metadata={
            "help": "Also write every run there as TREC files, with a record that a re-run with the same settings "
            "reuses (resume).",
            "aliases": ["--save-runs"],
        },
    )
    mteb_folder: str | None = field(
        default=None,
        metadata={"help": "Also run every model through mteb.evaluate on the same candidates.", "aliases": ["--mteb"]},
    )
    long_documents: str | None = field(
        default=None,
        metadata={
            "help": "maxp, firstp or sumtop:K: score documents longer than a model's window by overlapping passages "
            "(modeling_mice.LongDocuments) instead of truncating them."
        },
    )
    passage_stride: int | None = field(
        default=None, metadata={"help": "Tokens between passage starts with long_documents (default: half a passage)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if self.run_files is not None and len(self.run_files) != len(self.data):
            raise ValueError(
                f"give one run file per data folder: {len(self.run_files)} run file(s), {len(self.data)} folder(s)"
            )
        self.long_document_scoring()  # a bad spec fails before anything loads
        if self.interpolate is not None and not 0.0 <= self.interpolate <= 1.0:
            raise ValueError(f"interpolate must lie in [0, 1], got {self.interpolate}")

    def long_document_scoring(self) -> LongDocuments | None:
        """How long documents are scored (``long_documents`` and ``passage_stride``); None: truncated."""
        if self.long_documents is None:
            return None
        return LongDocuments.parse(self.long_documents, self.passage_stride)

    def build_first_stage(self, names: list[str]) -> FirstStage:
        """The first stage of ``first_stage`` (or the run files, one per collection of ``names``).

        Raises:
            FirstStageError: an unknown spec, both a spec and run files, or a model that is no SentenceTransformer.
        """
        return first_stage_from_spec(
            self.first_stage,
            None if self.run_files is None else dict(zip(names, self.run_files, strict=True)),
            dense_weight=self.dense_weight,
            device=self.device,
            cache_folder=None if self.cache_folder is None else Path(self.cache_folder) / "dense",
            show_progress=self.progress,
        )


def evaluate(config: EvaluationConfig, systems: dict | None = None) -> dict:
    """Evaluate the first stage and every model on every folder; returns the ``evaluation.json`` content.

    Args:
        config: the collections, the model specs and how they are compared.
        systems: re-rankers built in Python (name → object with ``prepare``, ``score_query``, ``release``,
            ``settings`` and a ``model`` to fingerprint, e.g. ``TeacherReranker``), evaluated after the models.

    Raises:
        BeirFormatError: a folder, qrels or run file is malformed. ModelPathError: a model cannot be found.
    """
    collections = [load_beir(folder, config.split) for folder in config.data]  # bad data fails before any model loads
    names = [data.name for data in collections]
    if len(set(names)) != len(names):
        raise ValueError(f"data folders must have distinct names, got {names}")
    first_stage = config.build_first_stage(names)
    rerankers = load_systems(config, first_stage.name, collection=names[0])
    clashes = set(systems or {}) & {*rerankers, first_stage.name}
    if clashes:
        raise ValueError(f"system names {sorted(clashes)} are taken by the models or the first stage; rename them")
    rerankers |= systems or {}
    report = new_report(config, first_stage, rerankers)
    fingerprints = {name: model_fingerprint(reranker.model) for name, reranker in rerankers.items()}
    for folder, data in zip(config.data, collections, strict=True):
        evaluate_collection(report, config, Collection(folder, data, first_stage), rerankers, fingerprints)
    return report


def load_systems(config: EvaluationConfig, first_stage: str = BM25, collection: str | None = None) -> dict:
    """The re-rankers of ``config.models`` by their short names (``bm25`` is the first stage, not one of them);
    ``first_stage`` names the first stage among the systems a baseline may be, ``collection`` the first collection
    they re-rank."""
    specs = [spec for spec in config.models if spec != BM25]
    rerankers = {
        name: load_reranker(
            spec,
            config.batch_size,
            config.device,
            config.cache_folder,
            config.progress,
            config.long_document_scoring(),
            collection,
        )
        for name, spec in zip(system_names(specs), specs, strict=True)
    }
    systems = [first_stage, *rerankers]
    if config.baseline is not None and config.baseline not in systems:
        raise ValueError(f"baseline {config.baseline!r} is not one of the systems {systems}")
    return rerankers


def new_report(config: EvaluationConfig, stage: FirstStage, rerankers: dict) -> dict:
    """The ``evaluation.json`` skeleton: settings and systems, results to be filled per collection."""
    first_stage = stage.name
    return {
        "settings": {
            "split": config.split,
            "depth": config.depth,
            "first_stage": stage.describe(),
            "interpolate": config.interpolate,
            "first_stage_k": config.first_stage_k if config.run_files is None else None,
            "batch_size": config.batch_size,
            "max_queries": config.max_queries,
            "seed": config.seed,
            "metrics": list(config.metrics),
            "baseline": config.baseline or first_stage,
            "device": config.device or "default",
            "torch_threads": torch.get_num_threads(),
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "systems": {first_stage: {"kind": "first-stage"}} | {name: r.settings() for name, r in rerankers.items()},
        "datasets": {},
        "results": {name: {} for name in [first_stage, *rerankers]},
        "significance": {},
        **({"mteb": {name: {} for name in rerankers}} if config.mteb_folder is not None else {}),
    }


class Collection(NamedTuple):
    """One collection to evaluate: its folder, its loaded split, and the first stage whose candidates are re-ranked."""

    folder: str
    data: BeirData
    first_stage: FirstStage


def evaluate_collection(
    report: dict, config: EvaluationConfig, collection: Collection, rerankers: dict, fingerprints: dict
) -> None:
    """Re-rank one collection with every system, compare the runs, and add the figures to ``report``."""
    full_data = collection.data
    data = subsample_queries(full_data, config.max_queries, config.seed)
    retrieved = collection.first_stage.retrieve(data, config.first_stage_k)
    candidates, first_stage_ms, source = retrieved.run, retrieved.ms_per_query, retrieved.source
    runs, timings = {collection.first_stage.name: candidates}, {}
    for name, reranker in rerankers.items():
        if isinstance(reranker, MiceReranker):  # its document store keeps each collection's ids apart
            reranker.open_collection(data.name)
        record = (
            None if config.runs_folder is None else Path(config.runs_folder) / data.name / f"{_file_name(name)}.json"
        )
        settings = {
            "model": reranker.settings(),
            "weights": fingerprints[name],
            "depth": config.depth,
            "split": config.split,
            "queries": sorted(data.queries),
            "first_stage": [source, config.first_stage_k],
        }
        timings[name] = _rerank_resumable(reranker, data, candidates, config.depth, record, settings, config.progress)
        runs[name] = (
            timings[name].run
            if config.interpolate is None
            else interpolate(candidates, timings[name].run, config.depth, config.interpolate)
        )
    comparison = compare_runs(data.qrels, runs, tuple(config.metrics), config.max_p)
    report["datasets"][data.name] = {
        "folder": str(collection.folder),
        "split": config.split,
        "queries": len(data.queries),
        "judged_queries_in_split": len(full_data.queries),
        "documents": len(data.corpus),
        "first_stage": source,
        "first_stage_ms_per_query": first_stage_ms,
        **({"first_stage_details": retrieved.details} if retrieved.details else {}),
        "queries_with_candidates": sum(1 for ranking in candidates.values() if ranking),
    }
    for name, run in runs.items():
        entry: dict = {"metrics": comparison["scores"][name]}
        if name in timings:
            entry |= timing_entry(timings[name], rerankers[name].kind)
        report["results"][name][data.name] = entry
        if config.runs_folder is not None:
            target = Path(config.runs_folder) / data.name
            target.mkdir(parents=True, exist_ok=True)
            write_trec_run(run, target / f"{_file_name(name)}.trec", tag=_file_name(name))
    report["significance"][data.name] = {key: comparison[key] for key in ("test", "max_p", "p_values", "better_than")}
    if config.mteb_folder is not None:
        report_mteb(report, config, data, candidates, rerankers)


def timing_entry(timing: RerankResult, kind: str) -> dict:
    """Per-query latency and, for MICE, the one-off document encoding."""
    entry = {
        "latency": summarize_latency(timing.query_ms)
        | {"mean_documents_per_query": float(np.mean(timing.documents_per_query or [0]))}
    }
    if kind == "mice":
        entry["document_encoding"] = {
            "seconds": timing.preparation_seconds,
            "documents": timing.documents_prepared,
            "ms_per_document": 1000 * timing.preparation_seconds / max(timing.documents_prepared, 1),
        }
    return entry


def report_mteb(report: dict, config: EvaluationConfig, data: BeirData, candidates: Run, rerankers: dict) -> None:
    """Every model through ``mteb.evaluate`` on the same candidates (an MTEB re-ranking task for the collection)."""
    from .mteb_task import beir_reranking_task, evaluate_with_mteb, mteb_cross_encoder

    task = beir_reranking_task(data, candidates, config.depth)
    for name, reranker in rerankers.items():
        mteb_name = "local/" + name.replace("/", "--")
        model = mteb_cross_encoder(reranker.model_name_or_path, config.batch_size, config.device, mteb_name)
        report["mteb"][name][data.name] = evaluate_with_mteb(model, task, config.mteb_folder, config.batch_size)


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``evaluation.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
