"""Searching an index: a first stage, then MICE re-ranking from the stored document states.

    >>> index = MiceIndex.load("my-index")
    >>> for hit in index.search("real-time strategy game", k=3):
    ...     print(hit.document_id, round(hit.score, 2), hit.text[:40])

Only the candidates' states are read from the store (memory-mapped); the query runs its lower layers once and its
interaction layers against the candidates, ``batch_size`` at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ranking_data.beir import Run
from ranking_data.fusion import fuse_runs

from .build import BM25, BUILD_FILE, DENSE, INDEX_FILE, STATES, load_mice
from .encoding import DocumentEncoder
from .first_stage import FIRST_STAGES, BM25FirstStage, DenseFirstStage
from .store import MANIFEST, DocumentStore, StoreError


class EmptyIndexError(RuntimeError):
    """An index that holds no searchable documents (never built, or its build has not finished)."""


@dataclass(frozen=True)
class SearchHit:
    """One result: the document id, its MICE score (raw logit) and its text."""

    document_id: str
    score: float
    text: str


@dataclass
class SearchRun:
    """Results of many queries as a TREC-style run, with each query's search time in milliseconds."""

    run: Run
    milliseconds: list[float] = field(default_factory=list)


class MiceIndex:
    """A MICE model over a document store and its first stages.

    Args:
        model: a ``MiceForSequenceClassification`` whose document-state fingerprint matches the store's.
        tokenizer: its tokenizer.
        store: the document store (texts kept, to return them).
        first_stages: ``{"bm25": ..., "dense": ...}`` objects with ``search(queries, depth) -> Run``; the dense
            one may be a callable that loads it on first use.
        batch_size: candidates scored per forward pass.
    """

    def __init__(self, model, tokenizer, store: DocumentStore, first_stages: dict[str, Any], batch_size: int = 64):
        self.model, self.tokenizer, self.store = model, tokenizer, store
        self.first_stages = first_stages
        self.batch_size = batch_size
        self.info: dict[str, Any] = {}

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: str | None = None,
        embedder: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
    ) -> MiceIndex:
        """Open the index built by ``mice index`` in ``path``.

        Args:
            model: the MICE model folder to score with (default: the one the index was built with). Its lower layers
                and tokenizer settings must be the index's (a model trained above the same frozen layers is fine).
            embedder: the SentenceTransformer for dense queries (default: the one recorded in the index).
            device: torch device of the model and the embedder.

        Raises:
            EmptyIndexError: ``path`` holds no finished index. FingerprintMismatchError: the model is not the one
            the states were encoded with. StoreError: a shard is truncated, damaged or foreign.
        """
        path = Path(path)
        info_path = path / INDEX_FILE
        if not info_path.is_file():
            raise EmptyIndexError(_unfinished(path))
        info = json.loads(info_path.read_text(encoding="utf-8"))
        mice, tokenizer = load_mice(model or info["model"], device)
        fingerprint = DocumentEncoder(mice, tokenizer).fingerprint
        store = DocumentStore.open(path / STATES, fingerprint)
        if len(store) != info["documents"]:
            raise StoreError(
                f"{path / STATES} holds {len(store)} documents but {info_path} records {info['documents']}: shards "
                "were removed or added after the build; rebuild the index"
            )
        first_stages: dict[str, Any] = {"bm25": BM25FirstStage.load(path / BM25)}
        if (path / DENSE).is_dir():
            first_stages["dense"] = lambda: DenseFirstStage.load(path / DENSE, embedder, device)
        index = cls(mice, tokenizer, store, first_stages, batch_size)
        index.info = info
        return index

    def __len__(self) -> int:
        return len(self.store)

    def _first_stage(self, name: str):
        if name not in FIRST_STAGES:
            raise ValueError(f"first stage {name!r} is not one of {FIRST_STAGES}")
        if name == "hybrid":
            return self._first_stage("bm25"), self._first_stage("dense")
        stage = self.first_stages.get(name)
        if stage is None:
            raise ValueError(f"this index has no {name} first stage (build it with mice index --embedder PATH)")
        if callable(stage) and not hasattr(stage, "search"):
            stage = self.first_stages[name] = stage()
        return stage

    def candidates(self, queries: dict[str, str], depth: int = 100, first_stage: str = "bm25") -> Run:
        """The first stage's top ``depth`` documents of each query."""
        if len(self.store) == 0:
            raise EmptyIndexError(f"the index {self.store.folder} holds no documents: there is nothing to search")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        stage = self._first_stage(first_stage)
        if first_stage == "hybrid":
            return fuse_runs([stage[0].search(queries, depth), stage[1].search(queries, depth)], [0.5, 0.5], depth)
        return stage.search(queries, depth)

    @torch.inference_mode()
    def rerank(self, query: str, document_ids: Sequence[str]) -> list[float]:
        """MICE scores of ``query`` against the stored states of ``document_ids`` (read for those documents only)."""
        query_inputs = self.model.tokenize_queries(self.tokenizer, [query])
        scores: list[float] = []
        for begin in range(0, len(document_ids), self.batch_size):
            states = self.store.get(document_ids[begin : begin + self.batch_size], device=self.model.device)
            scores += self.model.score(**query_inputs, document_states=states).logits[:, 0].float().tolist()
        return scores

    def _ranked(self, query: str, candidates: dict[str, float], k: int) -> list[tuple[str, float]]:
        ids = [doc_id for doc_id, _ in sorted(candidates.items(), key=lambda item: (-item[1], item[0]))]
        if not ids:
            return []
        scores = self.rerank(query, ids)
        order = sorted(range(len(ids)), key=lambda i: -scores[i])  # stable: ties keep the first stage's order
        return [(ids[i], scores[i]) for i in order[:k]]

    def search(self, query: str, k: int = 10, depth: int = 100, first_stage: str = "bm25") -> list[SearchHit]:
        """The ``k`` best of the first stage's top ``depth`` for ``query``, by MICE score, with their texts.

        An empty list means the first stage found nothing (BM25: no query term occurs in the collection).
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the query is empty: give some text to search for")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        candidates = self.candidates({"q": query}, depth, first_stage)["q"]
        ranked = self._ranked(query, candidates, k)
        texts = self.store.texts([doc_id for doc_id, _ in ranked]) if ranked else []
        return [SearchHit(doc_id, score, text) for (doc_id, score), text in zip(ranked, texts, strict=True)]

    def search_many(
        self, queries: dict[str, str], k: int = 10, depth: int = 100, first_stage: str = "bm25"
    ) -> SearchRun:
        """Search every query of ``{query_id: text}`` one at a time (each timed: first stage, states, MICE)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        result = SearchRun(run={})
        for query_id, query in queries.items():
            began = time.perf_counter()
            candidates = self.candidates({query_id: query}, depth, first_stage)[query_id]
            result.run[query_id] = dict(self._ranked(query, candidates, k))
            result.milliseconds.append(1000 * (time.perf_counter() - began))
        return result


def _unfinished(path: Path) -> str:
    """Why ``path`` cannot be searched, and what to do about it."""
    if (path / BUILD_FILE).is_file() and (path / STATES / MANIFEST).is_file():
        try:
            committed = len(list((path / STATES).glob("shard-*.safetensors")))
        except OSError:
            committed = 0
        return (
            f"{path} holds no finished index: its build stopped after {committed} committed shard(s) and wrote no "
            f"{INDEX_FILE}; run the same mice index command again to resume it"
        )
    if not path.exists():
        return f"{path} does not exist; build an index there with mice index --model MICE_DIR --data CORPUS --output {path}"
    return f"{path} is not a MICE index (no {INDEX_FILE}); build one with mice index --model MICE_DIR --data CORPUS"
