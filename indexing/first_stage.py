"""First stages of an index: BM25 (bm25s), dense vectors of any SentenceTransformer (exact search in faiss), and
their hybrid.

Each is saved in its own folder of the index and answers ``search(queries, depth) -> {query_id: {doc_id: score}}``.
The hybrid is ``ranking_data.fusion.fuse_runs`` of the two with equal weights, as in ``mice evaluate --first_stage
hybrid:PATH``: per-query min-max normalised scores summed over the union of their top ``depth``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ranking_data.beir import Run
from ranking_data.bm25 import BM25Retriever

from .fingerprint import model_fingerprint

FIRST_STAGES = ("bm25", "dense", "hybrid")
BM25_IDS = "doc_ids.json"
DENSE_INFO = "embedder.json"


class BM25FirstStage:
    """``ranking_data.bm25.BM25Retriever`` (Lucene k1=0.9 b=0.4, stopwords, Snowball stemmer), saved with bm25s."""

    def __init__(self, retriever: BM25Retriever):
        self.retriever = retriever

    @classmethod
    def build(cls, doc_ids: Sequence[str], texts: Sequence[str], folder: Path, show_progress: bool = False):
        retriever = BM25Retriever(show_progress=show_progress)
        retriever.index({doc_id: {"title": "", "text": text} for doc_id, text in zip(doc_ids, texts, strict=True)})
        folder.mkdir(parents=True, exist_ok=True)
        retriever.model.save(str(folder), show_progress=False)
        (folder / BM25_IDS).write_text(json.dumps(list(doc_ids)), encoding="utf-8")
        return cls(retriever)

    @classmethod
    def load(cls, folder: Path) -> BM25FirstStage:
        import bm25s

        retriever = BM25Retriever()
        retriever.model = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
        retriever.doc_ids = json.loads((folder / BM25_IDS).read_text(encoding="utf-8"))
        return cls(retriever)

    def describe(self) -> dict[str, Any]:
        return {"k1": self.retriever.k1, "b": self.retriever.b, "method": "lucene", "stemmer": "snowball english"}

    def search(self, queries: dict[str, str], depth: int) -> Run:
        return self.retriever.search(queries, depth)


def embed_documents(embedder: Any, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Unit-length document vectors (the embedder's document prompt, if it has one, applied)."""
    return embedder.encode_document(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)


def embedder_description(embedder: Any, path: str) -> dict[str, Any]:
    return {
        "path": str(path),
        "fingerprint": model_fingerprint(embedder),
        "dimension": int(embedder.get_embedding_dimension()),
        "max_seq_length": int(embedder.max_seq_length),
    }


class DenseFirstStage:
    """Cosine similarity of a SentenceTransformer's query and document vectors, searched exactly with faiss."""

    def __init__(self, embedder: Any, vectors: np.ndarray, doc_ids: list[str], info: dict[str, Any]):
        import faiss

        self.embedder, self.doc_ids, self.info = embedder, doc_ids, info
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @staticmethod
    def save(folder: Path, vectors: np.ndarray, doc_ids: Sequence[str], info: dict[str, Any]) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, folder / "vectors.safetensors")
        (folder / BM25_IDS).write_text(json.dumps(list(doc_ids)), encoding="utf-8")
        (folder / DENSE_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, embedder_path: str | None = None, device: str | None = None) -> DenseFirstStage:
        from safetensors.numpy import load_file
        from sentence_transformers import SentenceTransformer

        info = json.loads((folder / DENSE_INFO).read_text(encoding="utf-8"))
        path = embedder_path or info["path"]
        embedder = SentenceTransformer(path, device=device)
        found = model_fingerprint(embedder)
        if found != info["fingerprint"]:
            raise ValueError(
                f"the embedder at {path} is not the one the dense vectors of {folder} were computed with "
                f"(fingerprint {found}, index {info['fingerprint']}): pass the index's embedder, or rebuild the index"
            )
        vectors = load_file(folder / "vectors.safetensors")["vectors"]
        return cls(embedder, vectors, json.loads((folder / BM25_IDS).read_text(encoding="utf-8")), info)

    def search(self, queries: dict[str, str], depth: int) -> Run:
        if not queries:
            return {}
        query_ids = list(queries)
        vectors = self.embedder.encode_query(
            [queries[q] for q in query_ids], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)
        scores, rows = self.index.search(vectors, min(depth, len(self.doc_ids)))
        return {
            query_id: {self.doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0}
            for i, query_id in enumerate(query_ids)
        }
