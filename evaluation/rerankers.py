"""Re-ranking systems: any sentence-transformers CrossEncoder, MICE with pre-encoded documents, and any serving backend.

Every system scores one query against its candidate documents (``score_query``); MICE first encodes the candidate
documents once (``prepare``), so its per-query latency covers only the query side and the interaction layers, and
the one-off document encoding is timed separately. ``load_reranker`` turns a command-line spec into a system.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from indexing.encoding import DocumentEncoder
from indexing.store import DocumentStore


class ModelPathError(ValueError):
    """A model spec that names no loadable model."""


class CrossEncoderReranker:
    """A ``sentence_transformers.CrossEncoder`` scoring joint ``(query, document)`` pairs (raw logits).

    Works for any cross-encoder folder or Hub id, and for a MICE folder too (MICE splits the joint pair itself): that
    is the joint-pair reference path against which ``MiceReranker``'s pre-encoded path is checked.
    """

    kind = "cross-encoder"

    def __init__(
        self, model_name_or_path: str, batch_size: int = 32, device: str | None = None, long_documents=None, **kwargs
    ):
        from sentence_transformers import CrossEncoder

        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.long_documents = long_documents
        # Identity: rank by raw logits, as the losses train them; a Sigmoid would only turn large logits into ties.
        try:
            self.model = CrossEncoder(
                model_name_or_path, device=device, activation_fn=torch.nn.Identity(), trust_remote_code=True, **kwargs
            )
        except OSError as error:
            raise ModelPathError(
                f"could not load the cross-encoder {model_name_or_path!r}: it is not a local model folder and could not "
                f"be fetched from the Hub ({error})"
            ) from error
        self.model.eval()

    def prepare(self, documents: dict[str, str]) -> float:
        """Nothing to pre-compute for a cross-encoder; returns 0 seconds."""
        return 0.0

    def release(self) -> None:
        """Nothing is held between queries."""

    def score_query(self, query: str, documents: list[str], doc_ids: list[str]) -> list[float]:
        """Raw scores of ``query`` against each document text (by passages with ``long_documents``)."""
        if self.long_documents is not None:
            return self._score_passages(query, documents)
        scores = self.model.predict(
            [(query, text) for text in documents],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(score) for score in scores.reshape(len(documents), -1)[:, 0]]

    @torch.inference_mode()
    def _score_passages(self, query: str, documents: list[str]) -> list[float]:
        from modeling_mice import aggregate_passage_scores, tokenize_passages

        length = self.model.max_length or self.model.tokenizer.model_max_length
        stride = self.long_documents.stride
        encoded, owner = tokenize_passages(self.model.tokenizer, documents, length, stride, query)
        logits = [
            self.model.model(**{k: v[i : i + self.batch_size].to(self.model.device) for k, v in encoded.items()})
            .logits[:, 0]
            .float()
            .cpu()
            for i in range(0, len(owner), self.batch_size)
        ]
        return aggregate_passage_scores(torch.cat(logits), owner, len(documents), self.long_documents).tolist()

    def settings(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model_name_or_path,
            "batch_size": self.batch_size,
            "device": str(self.model.device),
            "long_documents": _describe(self.long_documents),
        }


class MiceReranker:
    """MICE re-ranking with documents encoded once (``encode_documents``) and scored with ``score``.

    The states live in an ``indexing.DocumentStore``: ``prepare(documents)`` encodes the documents it does not hold
    yet, and ``score_query`` runs the query's lower layers once and its interaction layers against up to
    ``batch_size`` stored documents at a time. ``cache_folder`` names that store: a folder of per-model stores kept
    between runs, or an index built by ``mice index`` (its compression is then what is evaluated); without one the
    store is temporary and forgotten after each chunk of queries. In a cache folder each ``collection`` has its own
    store (``open_collection`` moves to another). With ``long_documents`` each document is encoded
    as overlapping passages, held in memory (the store keeps one entry per document), and its passages' scores are
    aggregated (``modeling_mice.LongDocuments``).
    """

    kind = "mice"

    def __init__(
        self,
        model_name_or_path: str,
        batch_size: int = 32,
        device: str | None = None,
        cache_folder: str | Path | None = None,
        show_progress: bool = True,
        long_documents=None,
        collection: str | None = None,
    ):
        from transformers import AutoTokenizer

        import modeling_mice  # noqa: F401  (registers MICE with the Auto classes: no remote code needed)
        from modeling_mice import MiceForSequenceClassification

        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.show_progress = show_progress
        # The same default as sentence-transformers' CrossEncoder, so that both systems of a comparison share a device.
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = MiceForSequenceClassification.from_pretrained(model_name_or_path).eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        if cache_folder and long_documents is not None:
            raise ValueError("the document store does not hold passages yet: drop --cache or --long-documents")
        self.encoder = DocumentEncoder(self.model, self.tokenizer, batch_size, show_progress)
        self.cache_folder, self.collection = cache_folder, collection
        self.store = DocumentStore.at(cache_folder, self.encoder.fingerprint, collection=collection)
        self.long_documents = long_documents
        self.passages: dict[str, list[torch.Tensor]] = {}  # with long documents: each document's passage states

    def open_collection(self, name: str) -> None:
        """Re-rank collection ``name`` from now on: its own store in a cache folder (a temporary store is released
        after each chunk of queries anyway)."""
        if self.cache_folder is None or name == self.collection:
            return
        self.store.close()
        self.collection = name
        self.store = DocumentStore.at(self.cache_folder, self.encoder.fingerprint, collection=name)

    def prepare(self, documents: dict[str, str]) -> float:
        """Encode the documents ``{doc_id: text}`` not held yet; returns the seconds spent."""
        start = time.perf_counter()
        if self.long_documents is None:
            self.store.encode_missing(documents, self.encoder)
        else:
            self._encode_passages({doc_id: text for doc_id, text in documents.items() if doc_id not in self.passages})
        return time.perf_counter() - start

    @torch.inference_mode()
    def _encode_passages(self, missing: dict[str, str]) -> None:
        # Length-sorted batches waste little work on padding.
        ordered = sorted(missing, key=lambda doc_id: len(missing[doc_id]))
        for begin in tqdm(
            range(0, len(ordered), self.batch_size),
            desc="encoding passages",
            disable=not self.show_progress or not ordered,
            leave=False,
        ):
            ids = ordered[begin : begin + self.batch_size]
            texts = [missing[doc_id] for doc_id in ids]
            inputs, owner = self.model.tokenize_passages(self.tokenizer, texts, self.long_documents.stride)
            states = self.model.encode_documents(**inputs)
            lengths = states.attention_mask.sum(dim=1).tolist()
            for row, (index, length) in enumerate(zip(owner.tolist(), lengths, strict=True)):
                self.passages.setdefault(ids[index], []).append(states.hidden_states[row, :length].clone())

    def release(self) -> None:
        """Forget the passages and the documents of a temporary store (a store in a cache folder keeps them)."""
        self.passages.clear()
        if self.store.is_temporary:
            self.store.close()
            self.store = DocumentStore.temporary(self.encoder.fingerprint)

    def _passage_states(self, keys: list[tuple[str, int]]):
        """The held states of passages ``(doc_id, index)`` as one right-padded ``MiceDocumentStates``."""
        from modeling_mice import MiceDocumentStates

        hidden = [self.passages[doc_id][index] for doc_id, index in keys]
        mask = [torch.ones(len(h), dtype=torch.long) for h in hidden]
        states = MiceDocumentStates(pad_sequence(hidden, batch_first=True), pad_sequence(mask, batch_first=True))
        return states.to(self.model.device)

    @torch.inference_mode()
    def score_query(self, query: str, documents: list[str], doc_ids: list[str]) -> list[float]:
        """Raw scores of ``query`` against the prepared documents ``doc_ids`` (by passages with ``long_documents``)."""
        from modeling_mice import aggregate_passage_scores

        query_inputs = self.model.tokenize_queries(self.tokenizer, [query])
        keys = doc_ids
        if self.long_documents is not None:
            keys = [(doc_id, k) for doc_id in doc_ids for k in range(len(self.passages[doc_id]))]
        scores: list[float] = []
        for begin in range(0, len(keys), self.batch_size):
            batch = keys[begin : begin + self.batch_size]
            if self.long_documents is None:
                states = self.store.get(batch, device=self.model.device)
            else:
                states = self._passage_states(batch)
            logits = self.model.score(**query_inputs, document_states=states).logits
            scores.extend(logits[:, 0].tolist())
        if self.long_documents is None:
            return scores
        owner = torch.repeat_interleave(torch.tensor([len(self.passages[doc_id]) for doc_id in doc_ids]))
        return aggregate_passage_scores(torch.tensor(scores), owner, len(doc_ids), self.long_documents).tolist()

    def settings(self) -> dict:
        config = self.model.config
        return {
            "kind": self.kind,
            "model": self.model_name_or_path,
            "batch_size": self.batch_size,
            "device": str(self.model.device),
            "fusion_layer": config.fusion_layer,
            "interaction_layers": config.interaction_layers,
            "document_cache": None if self.store.is_temporary else str(self.store.folder),
            "document_states": self.store.codec.name,
            "long_documents": _describe(self.long_documents),
        }


class TeacherReranker:
    """A ``ranking_data.teachers.Teacher`` (e.g. the offline BM25 + bi-encoder ensemble) as a re-ranker, so that the
    teacher a model was distilled from is evaluated on the same candidates and with the same metrics as the model."""

    kind = "teacher"

    def __init__(self, teacher, model: torch.nn.Module):
        self.teacher = teacher
        self.model = model  # what the evaluation fingerprints (e.g. the ensemble's bi-encoder)

    def prepare(self, documents: dict[str, str]) -> float:
        """Nothing to pre-compute; returns 0 seconds."""
        return 0.0

    def release(self) -> None:
        """Nothing is held between queries."""

    def score_query(self, query: str, documents: list[str], doc_ids: list[str]) -> list[float]:
        texts = dict(zip(doc_ids, documents, strict=True))
        return [float(score) for score in self.teacher.score([query], [doc_ids], texts)[0]]

    def settings(self) -> dict:
        return {"kind": self.kind, **self.teacher.describe()}


class ServingReranker:
    """A ``serving.rerankers.Reranker`` (PyTorch or ONNX Runtime, fp32 or int8) as an evaluation system, so that every
    serving backend is re-ranked, timed and scored by the same harness as the other systems.

    ``prepare`` encodes a MICE re-ranker's documents into its bounded cache, so that the per-query latency covers the
    query side, as with :class:`MiceReranker`; a cross-encoder has nothing to prepare.
    """

    def __init__(self, reranker, backend: str, folder: str | Path):
        self.reranker, self.backend, self.folder = reranker, backend, str(folder)
        self.kind = reranker.kind

    def prepare(self, documents: dict[str, str]) -> float:
        """Encode the documents (MICE); returns the seconds spent."""
        start = time.perf_counter()
        if self.kind == "mice":
            self.reranker.encode(list(documents.values()))
        return time.perf_counter() - start

    def release(self) -> None:
        """Nothing to forget: the re-ranker's document cache is bounded."""

    def score_query(self, query: str, documents: list[str], doc_ids: list[str]) -> list[float]:
        return self.reranker.score(query, documents).tolist()

    def settings(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.folder,
            "backend": self.backend,
            "batch_size": self.reranker.batch_size,
        }


def _describe(long_documents) -> dict | None:
    return None if long_documents is None else dict(long_documents.__dict__)


def detect_model_kind(path: str | Path) -> str:
    """``"mice"`` when the folder's ``config.json`` says ``model_type: mice``, else ``"cross-encoder"``.

    Raises:
        ModelPathError: ``path`` is neither a model folder nor something that looks like a Hub id.
    """
    path = Path(path)
    config = path / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except json.JSONDecodeError as error:
            raise ModelPathError(f"{config} is not valid JSON ({error.msg}); is this a model folder?") from error
        return "mice" if model_type == "mice" else "cross-encoder"
    if path.exists():
        raise ModelPathError(f"{path} holds no config.json: pass a model folder (saved with save_pretrained)")
    if path.is_absolute() or str(path).startswith(".") or len(path.parts) != 2:
        raise ModelPathError(
            f"model path {path} does not exist; pass a model folder or a Hugging Face Hub id such as 'org/name'"
        )
    return "cross-encoder"  # a Hub id: CrossEncoder resolves it (MICE on the Hub loads there with remote code)


def load_reranker(
    spec: str,
    batch_size: int = 32,
    device: str | None = None,
    cache_folder: str | Path | None = None,
    show_progress: bool = True,
    long_documents=None,
    collection: str | None = None,
):
    """Build a re-ranker from ``ce:PATH``, ``mice:PATH`` or a bare ``PATH`` (kind read from its ``config.json``);
    ``collection`` names the first collection a MICE model's document store serves.

    Raises:
        ModelPathError: the path does not exist, is not a model folder, or is not a MICE model under ``mice:``.
    """
    kind, _, path = spec.partition(":") if spec.startswith(("ce:", "mice:")) else ("", "", spec)
    detected = detect_model_kind(path)
    if kind == "mice" and detected != "mice":
        raise ModelPathError(f"{path} is not a MICE model (its config.json model_type is not 'mice'); use ce:{path}")
    if (kind or ("ce" if detected == "cross-encoder" else "mice")) == "mice":
        return MiceReranker(path, batch_size, device, cache_folder, show_progress, long_documents, collection)
    return CrossEncoderReranker(path, batch_size, device, long_documents)
