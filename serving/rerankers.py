"""Re-rankers with sentence-transformers' `predict` / `rank` surface, on PyTorch or ONNX Runtime (fp32, int8).

- `MiceReranker`: documents encoded once (states, or their interaction keys and values) and kept in a bounded LRU
  cache keyed by the text's digest and the model's fingerprint, so a document seen before is never encoded again;
  only the query side runs per request.
- `CrossEncoderReranker`: joint `(query, document)` pairs.

Both split documents longer than the model's window into overlapping passages when given `LongDocuments` (MaxP,
FirstP, sum of the top), score texts in batches, and return raw scores (logits). `load_reranker(folder, backend)` picks
the kind from the folder's `config.json` and the engine from `backend` (`torch`, `onnx`, `onnx-int8`, and for MICE
`onnx-int8-query`: an int8 query scorer on fp32 document states).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from modeling_mice import LongDocuments, aggregate_passage_scores, tokenize_passages

# ONNX backends: (document encoder, query scorer) precisions. Quantising the document encoder is what costs MICE
# ranking quality (0.009-0.010 nDCG@10 on debian-known-item for two trained models, against 0.001-0.005 for the query
# scorer alone: docs/results.md).
# A cross-encoder has one graph, so only the backends whose two precisions agree apply to it.
ONNX_PRECISIONS = {"onnx": ("fp32", "fp32"), "onnx-int8": ("int8", "int8"), "onnx-int8-query": ("fp32", "int8")}
BACKENDS = ("torch", *ONNX_PRECISIONS)


def folder_fingerprint(folder: str | Path, backend: str) -> str:
    """Digest of a model folder's config and weights and of the backend: the key of every state it encodes (int8
    engines encode different states than fp32 ones)."""
    digest = hashlib.sha256(backend.encode())
    for name in ("config.json", "model.safetensors"):
        path = Path(folder) / name
        if path.is_file():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:24]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DocumentCache:
    """A bounded, thread-safe LRU cache `text digest -> per-passage document tensors`, for one model fingerprint.

    Bounded by documents and by bytes; the least recently used documents go first. `max_documents=0` disables it.
    """

    def __init__(self, fingerprint: str, max_documents: int = 10_000, max_bytes: int = 2 << 30):
        self.fingerprint = fingerprint
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[torch.Tensor] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: str, passages: list[torch.Tensor]) -> None:
        size = sum(tensor.nbytes for tensor in passages)
        if self.max_documents <= 0 or size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = passages
            self.bytes += size
            while len(self._entries) > self.max_documents or self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= sum(tensor.nbytes for tensor in evicted)


class Reranker:
    """Raw scores for `(query, documents)`; `predict` and `rank` as sentence-transformers' `CrossEncoder` has them."""

    kind = "reranker"

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        return self.score_many([(query, documents)])[0]

    def score_many(self, requests: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        """Scores of several `(query, documents)` requests, computed together where the model allows."""
        raise NotImplementedError

    def predict(self, pairs: list[tuple[str, str]] | tuple[str, str], **_) -> np.ndarray:
        """Raw scores of `(query, document)` pairs, in order (pairs of the same query are scored together)."""
        single = isinstance(pairs, tuple)
        pairs = [pairs] if single else list(pairs)
        by_query: dict[str, list[int]] = {}
        for index, (query, _document) in enumerate(pairs):
            by_query.setdefault(query, []).append(index)
        requests = [(query, [pairs[i][1] for i in indices]) for query, indices in by_query.items()]
        scores = np.empty(len(pairs), dtype=np.float32)
        for indices, values in zip(by_query.values(), self.score_many(requests), strict=True):
            scores[indices] = values
        return scores[0] if single else scores

    def rank(
        self, query: str, documents: list[str], top_k: int | None = None, return_documents: bool = False, **_
    ) -> list[dict]:
        """`[{"corpus_id", "score"[, "text"]}]`, best first, as `CrossEncoder.rank` returns them."""
        scores = self.score(query, documents)
        order = np.argsort(-scores, kind="stable")[:top_k]
        hits = [{"corpus_id": int(i), "score": float(scores[i])} for i in order]
        if return_documents:
            for hit in hits:
                hit["text"] = documents[hit["corpus_id"]]
        return hits


class TorchMiceEngine:
    """MICE in PyTorch, behind the engine interface of `serving.onnx_runtime.OnnxMiceEngine`."""

    def __init__(self, model, key_values: bool = False):
        from modeling_mice import MiceDocumentKeyValues, MiceDocumentStates

        self.model = model.eval()
        self.key_values = key_values
        self.container = MiceDocumentKeyValues if key_values else MiceDocumentStates
        self.max_query_length = model.config.max_query_length
        self.max_document_length = model.config.max_document_length

    @torch.inference_mode()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_documents(input_ids, attention_mask, key_values=self.key_values).values

    @torch.inference_mode()
    def score(self, query_input_ids, query_attention_mask, documents, document_attention_mask) -> torch.Tensor:
        states = self.container(documents, document_attention_mask)
        return self.model.score(query_input_ids, query_attention_mask, states).logits[:, 0]


class TorchCrossEncoderEngine:
    """An `AutoModelForSequenceClassification` cross-encoder, behind the engine interface."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.inputs = tokenizer.model_input_names
        self.max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)

    @torch.inference_mode()
    def score(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**{name: encoded[name] for name in self.inputs if name in encoded}).logits[:, 0]


def _check_texts(query, documents) -> None:
    if not isinstance(query, str):
        raise TypeError("the query must be a string")
    if not all(isinstance(document, str) for document in documents):
        raise TypeError("documents must be strings")


class MiceReranker(Reranker):
    """MICE re-ranking: each distinct document encoded once (cached), each query scored against them in batches."""

    kind = "mice"

    def __init__(
        self,
        engine,
        tokenizer,
        fingerprint: str,
        batch_size: int = 32,
        long_documents: LongDocuments | None = None,
        cache_documents: int = 10_000,
        cache_bytes: int = 2 << 30,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.long_documents = long_documents
        self.cache = DocumentCache(fingerprint, cache_documents, cache_bytes)

    def _passages(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids, mask and owning text of every passage of `texts` (one passage each without long documents)."""
        length = self.engine.max_document_length
        if self.long_documents is not None:
            encoded, owner = tokenize_passages(self.tokenizer, texts, length, self.long_documents.stride)
        else:
            encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=length, return_tensors="pt")
            owner = torch.arange(len(texts))
        return encoded["input_ids"], encoded["attention_mask"], owner

    def encode(self, texts: list[str]) -> dict[str, list[torch.Tensor]]:
        """Per-passage tensors `(Ld_p, D)` of each distinct text, from the cache or encoded now (length-sorted
        batches), keyed by text digest."""
        keys = {text_key(text): text for text in texts}
        found = {key: self.cache.get(key) for key in keys}
        missing = [key for key, value in found.items() if value is None]
        if missing:
            ids, mask, owner = self._passages([keys[key] for key in missing])
            lengths = mask.sum(dim=1)
            encoded: list[torch.Tensor | None] = [None] * len(ids)
            order = torch.argsort(lengths).tolist()
            for begin in range(0, len(order), self.batch_size):
                rows = order[begin : begin + self.batch_size]
                width = int(lengths[rows].max())
                values = self.engine.encode(ids[rows, :width], mask[rows, :width])
                for row, value in zip(rows, values, strict=True):
                    encoded[row] = value[: int(lengths[row])].clone()
            for index, key in enumerate(missing):
                found[key] = [encoded[row] for row in (owner == index).nonzero().flatten().tolist()]
                self.cache.put(key, found[key])
        return found

    def score_many(self, requests: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        for query, documents in requests:
            _check_texts(query, documents)
        encoded = self.encode([text for _, documents in requests for text in documents])
        return [self._score(query, documents, encoded) for query, documents in requests]

    def _score(self, query: str, documents: list[str], encoded: dict[str, list[torch.Tensor]]) -> np.ndarray:
        if not documents:
            return np.zeros(0, dtype=np.float32)
        passages = [encoded[text_key(text)] for text in documents]
        flat = [tensor for parts in passages for tensor in parts]
        owner = torch.repeat_interleave(torch.tensor([len(parts) for parts in passages]))
        query_inputs = self.tokenizer(
            [query], truncation=True, max_length=self.engine.max_query_length, return_tensors="pt"
        )
        scores = []
        for begin in range(0, len(flat), self.batch_size):
            batch = flat[begin : begin + self.batch_size]
            values = pad_sequence(batch, batch_first=True)
            mask = pad_sequence([torch.ones(len(v), dtype=torch.long) for v in batch], batch_first=True)
            scores.append(self.engine.score(query_inputs["input_ids"], query_inputs["attention_mask"], values, mask))
        scores = torch.cat(scores).float()
        if self.long_documents is not None:
            scores = aggregate_passage_scores(scores, owner, len(documents), self.long_documents)
        return scores.numpy()


class CrossEncoderReranker(Reranker):
    """A cross-encoder on joint `(query, document)` pairs, in batches of `batch_size` pairs (or passages)."""

    kind = "cross-encoder"

    def __init__(self, engine, tokenizer, batch_size: int = 32, long_documents: LongDocuments | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.long_documents = long_documents

    def score_many(self, requests: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        results = []
        for query, documents in requests:
            _check_texts(query, documents)
            results.append(self._score(query, documents))
        return results

    def _score(self, query: str, documents: list[str]) -> np.ndarray:
        if not documents:
            return np.zeros(0, dtype=np.float32)
        length = self.engine.max_length
        if self.long_documents is not None:
            encoded, owner = tokenize_passages(self.tokenizer, documents, length, self.long_documents.stride, query)
        else:
            encoded = self.tokenizer(
                [query] * len(documents),
                documents,
                padding=True,
                truncation="longest_first",
                max_length=length,
                return_tensors="pt",
            )
        scores = []
        total = len(encoded["input_ids"])
        for begin in range(0, total, self.batch_size):
            batch = {name: tensor[begin : begin + self.batch_size] for name, tensor in encoded.items()}
            width = int(batch["attention_mask"].sum(dim=1).max())
            scores.append(self.engine.score({name: tensor[:, :width] for name, tensor in batch.items()}))
        scores = torch.cat(scores).float()
        if self.long_documents is not None:
            scores = aggregate_passage_scores(scores, owner, len(documents), self.long_documents)
        return scores.numpy()


def load_reranker(
    folder: str | Path,
    backend: str = "torch",
    batch_size: int = 32,
    long_documents: LongDocuments | None = None,
    key_values: bool = False,
    cache_documents: int = 10_000,
    threads: int | None = None,
) -> Reranker:
    """A re-ranker for the MICE or cross-encoder model saved in `folder`, on `backend` (`torch`, `onnx` or
    `onnx-int8`, or for MICE `onnx-int8-query`: documents encoded in fp32, queries scored in int8; the ONNX backends
    read `folder/onnx`, written by `serving.export_onnx`). `key_values` keeps MICE documents as their interaction keys
    and values (faster scoring, more memory)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import modeling_mice  # noqa: F401  (registers MICE with the Auto classes)

    from .onnx_export import model_kind
    from .onnx_runtime import OnnxCrossEncoderEngine, OnnxMiceEngine

    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    folder = Path(folder)
    kind = model_kind(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    document_precision, precision = ONNX_PRECISIONS.get(backend, (None, None))
    if threads:
        torch.set_num_threads(threads)
    if kind == "mice":
        if backend == "torch":
            model = AutoModelForSequenceClassification.from_pretrained(folder)
            engine = TorchMiceEngine(model, key_values)
        else:
            engine = OnnxMiceEngine(folder / "onnx", precision, key_values, threads, document_precision)
        fingerprint = folder_fingerprint(folder, f"{backend}:{'key_values' if key_values else 'states'}")
        return MiceReranker(engine, tokenizer, fingerprint, batch_size, long_documents, cache_documents)
    if document_precision != precision:
        raise ValueError(f"{folder} holds a cross-encoder: {backend} is for MICE; use onnx-int8")
    if key_values:
        raise ValueError(f"{folder} holds a cross-encoder, which has no document keys and values: drop key_values")
    if backend == "torch":
        engine = TorchCrossEncoderEngine(AutoModelForSequenceClassification.from_pretrained(folder), tokenizer)
    else:
        engine = OnnxCrossEncoderEngine(folder / "onnx", precision, threads)
    return CrossEncoderReranker(engine, tokenizer, batch_size, long_documents)
