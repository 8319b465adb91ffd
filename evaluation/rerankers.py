"""Re-ranking systems: any sentence-transformers CrossEncoder, and MICE with pre-encoded documents.

Every system scores one query against its candidate documents (``score_query``); MICE first encodes the candidate
documents once (``prepare``), so its per-query latency covers only the query side and the interaction layers, and
the one-off document encoding is timed separately. ``load_reranker`` turns a command-line spec into a system.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

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

    def __init__(self, model_name_or_path: str, batch_size: int = 32, device: str | None = None, **kwargs):
        from sentence_transformers import CrossEncoder

        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
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
        """Raw scores of ``query`` against each document text."""
        scores = self.model.predict(
            [(query, text) for text in documents],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(score) for score in scores.reshape(len(documents), -1)[:, 0]]

    def settings(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model_name_or_path,
            "batch_size": self.batch_size,
            "device": str(self.model.device),
        }


class MiceReranker:
    """MICE re-ranking with documents encoded once (``encode_documents``) and scored with ``score``.

    The states live in an ``indexing.DocumentStore``: ``prepare(documents)`` encodes the documents it does not hold
    yet, and ``score_query`` runs the query's lower layers once and its interaction layers against up to
    ``batch_size`` stored documents at a time. ``cache_folder`` names that store: a folder of per-model stores kept
    between runs, or an index built by ``mice index`` (its compression is then what is evaluated); without one the
    store is temporary and forgotten after each chunk of queries.
    """

    kind = "mice"

    def __init__(
        self,
        model_name_or_path: str,
        batch_size: int = 32,
        device: str | None = None,
        cache_folder: str | Path | None = None,
        show_progress: bool = True,
    ):
        from transformers import AutoTokenizer

        import modeling_mice  # noqa: F401  (registers MICE with the Auto classes: no remote code needed)
        from modeling_mice import MiceForSequenceClassification

        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        # The same default as sentence-transformers' CrossEncoder, so that both systems of a comparison share a device.
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = MiceForSequenceClassification.from_pretrained(model_name_or_path).eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        self.encoder = DocumentEncoder(self.model, self.tokenizer, batch_size, show_progress)
        self.store = DocumentStore.at(cache_folder, self.encoder.fingerprint)

    def prepare(self, documents: dict[str, str]) -> float:
        """Encode the documents ``{doc_id: text}`` the store does not hold yet; returns the seconds spent."""
        start = time.perf_counter()
        self.store.encode_missing(documents, self.encoder)
        return time.perf_counter() - start

    def release(self) -> None:
        """Forget the documents of a temporary store (a store in a cache folder keeps them)."""
        if self.store.is_temporary:
            self.store.close()
            self.store = DocumentStore.temporary(self.encoder.fingerprint)

    @torch.inference_mode()
    def score_query(self, query: str, documents: list[str], doc_ids: list[str]) -> list[float]:
        """Raw scores of ``query`` against the prepared documents ``doc_ids``."""
        query_inputs = self.model.tokenize_queries(self.tokenizer, [query])
        scores: list[float] = []
        for begin in range(0, len(doc_ids), self.batch_size):
            states = self.store.get(doc_ids[begin : begin + self.batch_size], device=self.model.device)
            logits = self.model.score(**query_inputs, document_states=states).logits
            scores.extend(logits[:, 0].tolist())
        return scores

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
        }


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
):
    """Build a re-ranker from ``ce:PATH``, ``mice:PATH`` or a bare ``PATH`` (kind read from its ``config.json``).

    Raises:
        ModelPathError: the path does not exist, is not a model folder, or is not a MICE model under ``mice:``.
    """
    kind, _, path = spec.partition(":") if spec.startswith(("ce:", "mice:")) else ("", "", spec)
    detected = detect_model_kind(path)
    if kind == "mice" and detected != "mice":
        raise ModelPathError(f"{path} is not a MICE model (its config.json model_type is not 'mice'); use ce:{path}")
    if (kind or ("ce" if detected == "cross-encoder" else "mice")) == "mice":
        return MiceReranker(path, batch_size, device, cache_folder, show_progress)
    return CrossEncoderReranker(path, batch_size, device)
