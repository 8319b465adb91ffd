"""Re-rank a first-stage run on BEIR-layout folders with several systems and report effectiveness and latency.

``evaluate_systems`` is what ``scripts/evaluate.py`` and the quickstart call. For each folder it builds the first
stage (BM25 with bm25s, or a TREC run file), re-ranks its top ``depth`` documents with every system, evaluates every
run with ir-measures (the first stage included), runs paired t-tests between systems, and times each query's re-ranking.
A re-ranked run is the re-ranked top ``depth`` followed by the rest of the first-stage ranking in its order, so
R@100 and MAP stay comparable with the first stage at any depth.
"""

from __future__ import annotations

import json
import platform
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from indexing.fingerprint import model_fingerprint

from .beir import BeirData, BeirFormatError, Run, load_beir, read_trec_run, write_trec_run
from .bm25 import BM25Retriever
from .metrics import DEFAULT_METRICS, compare_runs
from .rerankers import load_reranker

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


def subsample_queries(data: BeirData, max_queries: int | None, seed: int = 0) -> BeirData:
    """At most ``max_queries`` judged queries, drawn reproducibly with ``seed`` (all of them when ``None``)."""
    if max_queries is None or max_queries >= len(data.queries):
        return data
    if max_queries < 1:
        raise ValueError(f"max_queries must be at least 1, got {max_queries}")
    kept = sorted(random.Random(seed).sample(sorted(data.queries), max_queries))
    return replace(data, queries={q: data.queries[q] for q in kept}, qrels={q: data.qrels[q] for q in kept})


def bm25_first_stage(data: BeirData, k: int = 1000, show_progress: bool = False) -> tuple[Run, float]:
    """BM25 top-``k`` of every judged query, and the retrieval time per query in ms (indexing excluded)."""
    retriever = BM25Retriever(show_progress=show_progress).index(data.corpus)
    start = time.perf_counter()
    run = retriever.search(data.queries, k)
    return run, 1000 * (time.perf_counter() - start) / max(len(data.queries), 1)


def check_run(run: Run, data: BeirData, source: str) -> Run:
    """Keep the judged queries of a user-given run, checking that it belongs to this collection.

    Raises:
        BeirFormatError: the run names documents missing from the corpus, or none of the judged queries.
    """
    unknown = sorted({doc_id for docs in run.values() for doc_id in docs} - set(data.corpus))
    if unknown:
        raise BeirFormatError(
            f"{source} names {len(unknown)} document id(s) missing from {data.name}/corpus.jsonl, e.g. {unknown[:3]}: "
            "is it a run for this collection?"
        )
    if not set(run) & set(data.queries):
        raise BeirFormatError(
            f"{source} ranks none of the {len(data.queries)} judged queries of {data.name} ({data.split} split); "
            f"its query ids look like {sorted(run)[:3]}, the collection's like {sorted(data.queries)[:3]}"
        )
    unranked = [query_id for query_id in data.queries if not run.get(query_id)]
    if unranked:
        warnings.warn(
            f"{source} ranks nothing for {len(unranked)} of the {len(data.queries)} judged queries of {data.name} "
            f"(e.g. {unranked[:3]}); they count as zero for every system, as in trec_eval -c",
            stacklevel=2,
        )
    return {query_id: run.get(query_id, {}) for query_id in data.queries}


def top_documents(ranking: dict[str, float], depth: int) -> list[str]:
    """Document ids of a ranking, best first (ties broken by id, so every system sees the same order)."""
    return [doc_id for doc_id, _ in sorted(ranking.items(), key=lambda item: (-item[1], item[0]))][:depth]


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
            floor = min(reranked.values(), default=0.0)
            rest = [d for d in top_documents(candidates[query_id], len(candidates[query_id])) if d not in reranked]
            reranked.update({doc_id: floor - 1.0 - rank for rank, doc_id in enumerate(rest)})
            result.run[query_id] = reranked
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


def evaluate_systems(
    data_folders: list[str | Path],
    models: list[str],
    split: str = "test",
    depth: int = 100,
    run_files: list[str | Path] | None = None,
    first_stage_k: int = 1000,
    batch_size: int = 32,
    max_queries: int | None = None,
    seed: int = 0,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    max_p: float = 0.05,
    baseline: str | None = None,
    device: str | None = None,
    cache_folder: str | Path | None = None,
    runs_folder: str | Path | None = None,
    mteb_folder: str | Path | None = None,
    show_progress: bool = True,
) -> dict:
    """Evaluate the first stage and every model on every folder; returns the ``evaluation.json`` content.

    Args:
        data_folders: BEIR-layout folders.
        models: ``bm25`` (the first stage, always evaluated anyway), ``ce:PATH``, ``mice:PATH`` or a bare path/Hub id.
        split: the qrels split to evaluate (``qrels/<split>.tsv``).
        depth: how many first-stage documents each model re-ranks.
        run_files: one TREC run per folder to use as first stage instead of BM25.
        first_stage_k: how many documents BM25 retrieves (MAP and R@100 are computed over them).
        max_queries: evaluate a reproducible sample of at most this many judged queries (``seed``).
        baseline: the system the markdown table marks significance against (default: the first stage).
        cache_folder: where MICE document states are stored (``indexing.DocumentStore.at``: a cache folder, or an
            index built by ``mice index``; none by default).
        mteb_folder: if given, every model also runs through ``mteb.evaluate`` on the same candidates (an MTEB
            re-ranking task per folder; results in MTEB's ResultCache layout there, scores under ``"mteb"``).
        runs_folder: if given, every run is also written there as ``<dataset>/<system>.trec``, with a JSON record of
            the run and its timings; a later call with the same settings reuses those records (resume).

    Raises:
        BeirFormatError: a folder, qrels or run file is malformed. ModelPathError: a model cannot be found.
    """
    if run_files is not None and len(run_files) != len(data_folders):
        raise ValueError(
            f"give one run file per data folder: {len(run_files)} run file(s), {len(data_folders)} folder(s)"
        )
    datasets = [load_beir(folder, split) for folder in data_folders]  # fail on bad data before loading any model
    names = [data.name for data in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"data folders must have distinct names, got {names}")
    specs = [spec for spec in models if spec != BM25]
    first_stage_name = BM25 if run_files is None else "first-stage"
    names_of_systems = system_names(specs)
    rerankers = {
        name: load_reranker(spec, batch_size, device, cache_folder, show_progress)
        for name, spec in zip(names_of_systems, specs, strict=True)
    }
    fingerprints = {name: model_fingerprint(reranker.model) for name, reranker in rerankers.items()}
    baseline = baseline or first_stage_name
    if baseline not in [first_stage_name, *names_of_systems]:
        raise ValueError(f"baseline {baseline!r} is not one of the systems {[first_stage_name, *names_of_systems]}")

    report: dict = {
        "settings": {
            "split": split,
            "depth": depth,
            "first_stage": "bm25 (bm25s, Lucene k1=0.9 b=0.4, English stopwords + Snowball stemmer)"
            if run_files is None
            else "run files",
            "first_stage_k": first_stage_k if run_files is None else None,
            "batch_size": batch_size,
            "max_queries": max_queries,
            "seed": seed,
            "metrics": list(metrics),
            "baseline": baseline,
            "device": device or "default",
            "torch_threads": torch.get_num_threads(),
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "systems": {first_stage_name: {"kind": "first-stage"}}
        | {name: reranker.settings() for name, reranker in rerankers.items()},
        "datasets": {},
        "results": {name: {} for name in [first_stage_name, *names_of_systems]},
        "significance": {},
        **({"mteb": {name: {} for name in names_of_systems}} if mteb_folder is not None else {}),
    }
    for index, full_data in enumerate(datasets):
        data = subsample_queries(full_data, max_queries, seed)
        if run_files is None:
            candidates, first_stage_ms = bm25_first_stage(data, first_stage_k, show_progress)
            source = "bm25"
        else:
            source = str(run_files[index])
            candidates, first_stage_ms = check_run(read_trec_run(source), data, source), None
        runs = {first_stage_name: candidates}
        timings = {first_stage_name: None}
        for name, reranker in rerankers.items():
            record = None if runs_folder is None else Path(runs_folder) / data.name / f"{_file_name(name)}.json"
            settings = {
                "model": reranker.settings(),
                "weights": fingerprints[name],
                "depth": depth,
                "split": split,
                "queries": sorted(data.queries),
                "first_stage": [source, first_stage_k],
            }
            timings[name] = _rerank_resumable(reranker, data, candidates, depth, record, settings, show_progress)
            runs[name] = timings[name].run
        comparison = compare_runs(data.qrels, runs, metrics, max_p)
        report["datasets"][data.name] = {
            "folder": str(data_folders[index]),
            "split": split,
            "queries": len(data.queries),
            "judged_queries_in_split": len(full_data.queries),
            "documents": len(data.corpus),
            "first_stage": source,
            "first_stage_ms_per_query": first_stage_ms,
            "queries_with_candidates": sum(1 for ranking in candidates.values() if ranking),
        }
        for name, run in runs.items():
            entry: dict = {"metrics": comparison["scores"][name]}
            timing = timings[name]
            if timing is not None:
                entry["latency"] = summarize_latency(timing.query_ms) | {
                    "mean_documents_per_query": float(np.mean(timing.documents_per_query or [0]))
                }
                if rerankers[name].kind == "mice":
                    entry["document_encoding"] = {
                        "seconds": timing.preparation_seconds,
                        "documents": timing.documents_prepared,
                        "ms_per_document": 1000 * timing.preparation_seconds / max(timing.documents_prepared, 1),
                    }
            report["results"][name][data.name] = entry
            if runs_folder is not None:
                target = Path(runs_folder) / data.name
                target.mkdir(parents=True, exist_ok=True)
                write_trec_run(run, target / f"{_file_name(name)}.trec", tag=_file_name(name))
        report["significance"][data.name] = {
            key: comparison[key] for key in ("test", "max_p", "p_values", "better_than")
        }
        if mteb_folder is not None:
            from .mteb_task import beir_reranking_task, evaluate_with_mteb, mteb_cross_encoder

            task = beir_reranking_task(data, candidates, depth)
            for name, reranker in rerankers.items():
                mteb_name = "local/" + name.replace("/", "--")
                model = mteb_cross_encoder(reranker.model_name_or_path, batch_size, device, mteb_name)
                report["mteb"][name][data.name] = evaluate_with_mteb(model, task, mteb_folder, batch_size)
    return report


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``evaluation.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
