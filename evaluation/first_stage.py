"""First stages: what the re-rankers re-rank. BM25, a TREC run file, a dense retriever, or a BM25 + dense hybrid.

Every first stage answers ``retrieve(data, k) -> FirstStageRun``: the top ``k`` documents of each judged query of a
BEIR split, and how long retrieval took per query (indexing excluded). ``first_stage_from_spec`` builds one from the
strings ``mice evaluate --first_stage`` takes:

=====================  ==============================================================================================
``bm25``               bm25s, Lucene BM25 (k1=0.9, b=0.4), English stopwords and stemmer (``ranking_data.bm25``)
``dense:PATH``         a ``SentenceTransformer`` folder or Hub id: exact inner product over the whole corpus with faiss
                       (``IndexFlatIP``; cosine models get normalised embeddings)
``hybrid:PATH``        BM25 and ``dense:PATH`` fused per query: each run's scores min-max normalised to [0, 1] over the
                       query's top ``k``, then ``dense_weight * dense + (1 - dense_weight) * bm25`` over the union
=====================  ==============================================================================================

A run file (``--run``) is a first stage too (:class:`RunFileFirstStage`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ranking_data.beir import BeirData, BeirFormatError, Run, read_trec_run
from ranking_data.bm25 import BM25Retriever
from ranking_data.fusion import fuse_runs

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

FIRST_STAGE_KINDS = ("bm25", "dense", "hybrid")


class FirstStageError(ValueError):
    """A first-stage spec or model that cannot be used; the message says what to pass instead."""


@dataclass
class FirstStageRun:
    """A first-stage run with its cost and origin.

    ``ms_per_query`` excludes indexing (None where nothing was timed, e.g. a run file); ``source`` says what made the
    run (``bm25``, a run file's path, ``dense:PATH@weights``), so that records of re-ranked runs are reused only for the
    same candidates; ``details`` holds what else was measured (document encoding time, documents per second)."""

    run: Run
    ms_per_query: float | None
    source: str
    details: dict[str, Any] = field(default_factory=dict)


class FirstStage(ABC):
    """Retrieves the top ``k`` documents of every judged query of a split. ``name`` names it in reports."""

    name: str = "first-stage"

    @abstractmethod
    def retrieve(self, data: BeirData, k: int) -> FirstStageRun:
        """The top ``k`` documents of each query of ``data`` (``{query_id: {doc_id: score}}``) and its cost."""

    def describe(self) -> str:
        """One line for the evaluation's settings."""
        return self.name


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


class BM25FirstStage(FirstStage):
    """BM25 over the corpus (``ranking_data.bm25``), indexed once per collection."""

    name = "bm25"

    def __init__(self, show_progress: bool = False):
        self.show_progress = show_progress

    def retrieve(self, data: BeirData, k: int) -> FirstStageRun:
        run, ms_per_query = bm25_first_stage(data, k, self.show_progress)
        return FirstStageRun(run, ms_per_query, "bm25")

    def describe(self) -> str:
        return "bm25 (bm25s, Lucene k1=0.9 b=0.4, English stopwords + Snowball stemmer)"


class RunFileFirstStage(FirstStage):
    """TREC run files, one per collection (``{collection name: path}``), checked against the collection."""

    name = "first-stage"

    def __init__(self, paths: dict[str, str | Path]):
        self.paths = {name: str(path) for name, path in paths.items()}

    def retrieve(self, data: BeirData, k: int) -> FirstStageRun:
        source = self.paths[data.name]
        return FirstStageRun(check_run(read_trec_run(source), data, source), None, source)

    def describe(self) -> str:
        return "run files"


def _is_cross_encoder_folder(path: Path) -> str | None:
    """Why the folder is a re-ranker rather than an embedding model, or None."""
    config_path = path / "config.json"
    if not config_path.is_file() or (path / "modules.json").is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") == "mice":
        return "a MICE re-ranker"
    if any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return "a cross-encoder"
    return None


def load_embedding_model(path: str | Path, device: str | None = None) -> SentenceTransformer:
    """A ``SentenceTransformer`` from a folder or Hub id, refusing re-rankers with a message that says what to pass.

    Raises:
        FirstStageError: the path does not exist, or it is a cross-encoder or MICE folder.
    """
    from sentence_transformers import SentenceTransformer

    folder = Path(path)
    reranker = _is_cross_encoder_folder(folder) if folder.is_dir() else None
    if reranker:
        raise FirstStageError(
            f"{path} is {reranker}, not an embedding model: a dense first stage needs a SentenceTransformer folder "
            "(e.g. one written by `mice distill-embedder` or `embeddings.save_early_layer_model`)"
        )
    if not folder.exists() and (folder.is_absolute() or str(path).startswith(".") or len(folder.parts) != 2):
        raise FirstStageError(f"embedding model {path} does not exist; pass a SentenceTransformer folder or a Hub id")
    try:
        return SentenceTransformer(str(path), device=device)
    except OSError as error:
        raise FirstStageError(f"could not load the embedding model {path!r} ({error})") from error


class DenseFirstStage(FirstStage):
    """Exact dense retrieval: every document embedded by a ``SentenceTransformer``, exact inner product (faiss).

    Queries go through ``encode_query`` and documents through ``encode_document``, so models with query/document
    prompts or routes work unchanged. Models whose similarity is cosine get unit-length embeddings, so the inner
    product is their cosine; ``dot`` models keep raw embeddings. With ``cache_folder``, document embeddings are saved
    (safetensors, keyed by the model's weights and the corpus) and reused by later runs and by the hybrid.
    """

    name = "dense"

    def __init__(
        self,
        model: SentenceTransformer | str | Path,
        batch_size: int = 64,
        device: str | None = None,
        cache_folder: str | Path | None = None,
        show_progress: bool = False,
    ):
        self.model_name = str(model) if isinstance(model, str | Path) else _model_name(model)
        self.model = load_embedding_model(model, device) if isinstance(model, str | Path) else model
        similarity = self.model.similarity_fn_name or "cosine"
        if similarity not in ("cosine", "dot"):
            raise FirstStageError(
                f"{self.model_name} compares embeddings with {similarity!r}; the dense first stage searches by inner "
                "product and supports 'cosine' and 'dot' models"
            )
        self.normalize = similarity == "cosine"
        self.batch_size = batch_size
        self.cache_folder = Path(cache_folder) if cache_folder is not None else None
        self.show_progress = show_progress
        self._fingerprint: str | None = None

    def describe(self) -> str:
        return f"dense {self.model_name} (exact inner product, faiss IndexFlatIP{', cosine' if self.normalize else ''})"

    def _encode(self, texts: list[str], role: str) -> np.ndarray:
        encode = self.model.encode_query if role == "query" else self.model.encode_document
        embeddings = encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=self.show_progress and role == "document",
        )
        return np.ascontiguousarray(embeddings, dtype=np.float32)

    @property
    def fingerprint(self) -> str:
        """Digest of the model's weights and configuration (``indexing.fingerprint.model_fingerprint``)."""
        if self._fingerprint is None:
            from indexing.fingerprint import model_fingerprint

            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def source(self) -> str:
        return f"dense:{self.model_name}@{self.fingerprint}"

    def _cache_path(self, data: BeirData, doc_ids: list[str], texts: list[str]) -> Path | None:
        if self.cache_folder is None:
            return None
        key = cache_key(self.fingerprint, self.normalize, self.model.max_seq_length, doc_ids, texts)
        return self.cache_folder / f"{data.name}-{key}"

    def document_embeddings(self, data: BeirData) -> tuple[list[str], np.ndarray, dict[str, Any]]:
        """Document ids, their embeddings ``(N, dim)`` and the encoding cost (from the cache where it has them)."""
        if not data.corpus:
            raise FirstStageError(f"{data.name} has an empty corpus: there is nothing to retrieve")
        doc_ids = list(data.corpus)
        texts = [data.document_text(doc_id) for doc_id in doc_ids]
        encoded = encode_in_chunks(
            texts,
            lambda chunk: {"embeddings": self._encode(chunk, "document")},
            self._cache_path(data, doc_ids, texts),
            show_progress=self.show_progress,
        )
        return doc_ids, encoded.arrays["embeddings"], encoded.cost()

    def retrieve(self, data: BeirData, k: int) -> FirstStageRun:
        doc_ids, documents, details = self.document_embeddings(data)
        query_ids = list(data.queries)
        start = time.perf_counter()
        queries = self._encode([data.queries[q] for q in query_ids], "query")
        run = exact_search(doc_ids, documents, query_ids, queries, k)
        ms_per_query = 1000 * (time.perf_counter() - start) / max(len(query_ids), 1)
        return FirstStageRun(run, ms_per_query, self.source, details)


def exact_search(doc_ids: list[str], documents: np.ndarray, query_ids: list[str], queries: np.ndarray, k: int) -> Run:
    """The top ``k`` documents of each query by exact inner product (faiss ``IndexFlatIP``): ``{query_id: {doc_id:
    score}}``. Normalise both sides beforehand for cosine similarity."""
    import faiss

    if len(doc_ids) != len(documents) or len(query_ids) != len(queries):
        raise ValueError(
            f"{len(doc_ids)} ids for {len(documents)} documents, {len(query_ids)} for {len(queries)} queries"
        )
    index = faiss.IndexFlatIP(documents.shape[1])
    index.add(np.ascontiguousarray(documents, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(doc_ids)))
    return {
        query_id: {doc_ids[row]: float(score) for row, score in zip(rows[i], scores[i], strict=True) if row >= 0}
        for i, query_id in enumerate(query_ids)
    }


@dataclass
class EncodedTexts:
    """What :func:`encode_in_chunks` returns: the arrays, and the time spent on the texts encoded by this call."""

    arrays: dict[str, np.ndarray]
    seconds: float
    encoded: int

    def cost(self) -> dict[str, Any]:
        if not self.encoded:
            return {"document_embeddings": "cached"}
        return {"document_encoding_s": self.seconds, "documents_per_s": self.encoded / self.seconds}


def cache_key(*parts: Any) -> str:
    """A short digest of everything (JSON-able) that cached arrays depend on: the name of an
    :func:`encode_in_chunks` folder."""
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:24]


def encode_in_chunks(
    texts: list[str],
    encode: Callable[[list[str]], dict[str, np.ndarray]],
    folder: Path | None,
    chunk_size: int = 2048,
    show_progress: bool = False,
    description: str = "encoding documents",
) -> EncodedTexts:
    """Arrays ``{name: (len(texts), ...)}`` computed ``chunk_size`` texts at a time by ``encode``.

    With ``folder``, each finished chunk is written there atomically (safetensors) and read back by later calls, so
    an interrupted encoding of a large corpus resumes where it stopped. The folder's name must identify the model and
    the texts (:func:`cache_key` of both).
    """
    from safetensors.numpy import load_file, save_file
    from tqdm.auto import tqdm

    chunks, seconds, encoded = [], 0.0, 0
    starts = range(0, len(texts), chunk_size)
    for number, begin in enumerate(tqdm(starts, desc=description, disable=not show_progress, leave=False)):
        path = None if folder is None else folder / f"chunk-{number:05d}.safetensors"
        if path is not None and path.is_file():
            chunks.append(load_file(str(path)))
            continue
        start = time.perf_counter()
        arrays = {name: np.ascontiguousarray(a) for name, a in encode(texts[begin : begin + chunk_size]).items()}
        seconds += time.perf_counter() - start
        encoded += len(texts[begin : begin + chunk_size])
        if path is not None:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            save_file(arrays, str(temporary))
            temporary.replace(path)
        chunks.append(arrays)
    if not chunks:
        raise ValueError("no texts to encode")
    return EncodedTexts({name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}, seconds, encoded)


class HybridFirstStage(FirstStage):
    """BM25 and a dense retriever fused per query (:func:`fuse_runs`): each retrieves its top ``k``, the fused run
    keeps the top ``k`` of their union. ``dense_weight`` weighs the dense side (0.5: equal weights)."""

    name = "hybrid"

    def __init__(self, dense: DenseFirstStage, dense_weight: float = 0.5, bm25: BM25FirstStage | None = None):
        if not 0.0 <= dense_weight <= 1.0:
            raise FirstStageError(f"dense_weight must lie in [0, 1], got {dense_weight}")
        self.dense, self.dense_weight = dense, dense_weight
        self.bm25 = bm25 or BM25FirstStage(dense.show_progress)

    def describe(self) -> str:
        return (
            f"hybrid: {self.dense_weight:g} x {self.dense.describe()} + {1 - self.dense_weight:g} x "
            f"{self.bm25.describe()}, per-query min-max normalised"
        )

    def retrieve(self, data: BeirData, k: int) -> FirstStageRun:
        bm25 = self.bm25.retrieve(data, k)
        dense = self.dense.retrieve(data, k)
        start = time.perf_counter()
        run = fuse_runs([dense.run, bm25.run], [self.dense_weight, 1.0 - self.dense_weight], k)
        fusion_ms = 1000 * (time.perf_counter() - start) / max(len(data.queries), 1)
        ms_per_query = bm25.ms_per_query + dense.ms_per_query + fusion_ms
        return FirstStageRun(run, ms_per_query, f"hybrid:{self.dense_weight:g}:{dense.source}", dense.details)


def evaluate_first_stages(
    data: BeirData, stages: dict[str, FirstStage], k: int = 1000, metrics: tuple[str, ...] = ("ndcg@10", "recall@100")
) -> dict[str, dict[str, Any]]:
    """First stages side by side on one split: ``{name: {"metrics", "ms_per_query", "source", "details"}}``.

    Example:
        >>> evaluate_first_stages(load_beir("sample", "test"), {"bm25": BM25FirstStage(),
        ...     "hybrid": HybridFirstStage(DenseFirstStage("models/embedder"))})
    """
    from .metrics import evaluate_run

    results = {}
    for name, stage in stages.items():
        retrieved = stage.retrieve(data, k)
        results[name] = {
            "metrics": evaluate_run(data.qrels, retrieved.run, metrics),
            "ms_per_query": retrieved.ms_per_query,
            "source": retrieved.source,
            "details": retrieved.details,
        }
    return results


def _model_name(model: Any) -> str:
    config = getattr(model[0], "config", None) if len(model) else None
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def first_stage_from_spec(
    spec: str = "bm25",
    run_files: dict[str, str | Path] | None = None,
    *,
    dense_weight: float = 0.5,
    batch_size: int = 64,
    device: str | None = None,
    cache_folder: str | Path | None = None,
    show_progress: bool = False,
) -> FirstStage:
    """The first stage a spec names: ``bm25``, ``dense:PATH`` or ``hybrid:PATH``; run files (one per collection)
    when ``run_files`` is given (then the spec must be ``bm25``, the default).

    Raises:
        FirstStageError: an unknown spec, a missing path, both a spec and run files, or a model that is no
            ``SentenceTransformer`` (a cross-encoder or MICE folder).
    """
    kind, _, path = spec.partition(":")
    if run_files is not None:
        if spec != "bm25":
            raise FirstStageError(f"give either run files or the first stage {spec!r}, not both")
        return RunFileFirstStage(run_files)
    if kind not in FIRST_STAGE_KINDS or (kind == "bm25") != (not path):
        raise FirstStageError(
            f"unknown first stage {spec!r}: use bm25, dense:PATH or hybrid:PATH (PATH: a SentenceTransformer folder)"
        )
    if kind == "bm25":
        return BM25FirstStage(show_progress)
    dense = DenseFirstStage(path, batch_size, device, cache_folder, show_progress)
    return dense if kind == "dense" else HybridFirstStage(dense, dense_weight)
