"""MICE re-ranking demo: BM25, a cross-encoder and MICE side by side.

MICE (Minimal Interaction Cross-Encoder) encodes documents in its lower layers without looking at the query, so
their states can be computed once, in advance; at query time only the query side runs, with cross-attention to
those frozen states. This Space shows the consequence: nearly the cross-encoder's ranking, in a fraction of its
time, and a heatmap of which document tokens each query token attends to.

Models come only from the Space's configuration, never from the visitor:
``MICE_SPACE_MICE_MODEL`` and ``MICE_SPACE_CROSS_ENCODER_MODEL`` (a folder, or a Hub model id where the Hub can be
reached), defaulting to the folders ``mice quickstart`` writes (``./mice-quickstart/models/mice`` and
``./mice-quickstart/models/cross-encoder``). ``MICE_SPACE_PREENCODE`` chooses which built-in documents MICE encodes
at start-up: ``examples`` (default: the BM25 candidates of the example queries) or ``all`` (the whole corpus).

Run locally with ``python spaces/mice-rerank-demo/app.py``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import matplotlib

matplotlib.use("Agg")  # the Space has no display; must precede pyplot
import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.stats import kendalltau
from sentence_transformers import CrossEncoder
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

import mice_rerank
from hub_cards.records import RecordError, read_training_record, training_budget
from indexing import DocumentEncoder, DocumentStore
from modeling_mice import MiceDocumentStates, MiceForSequenceClassification
from ranking_data.beir import load_beir
from ranking_data.bm25 import BM25Retriever

logger = logging.getLogger("mice_space")

MICE_MODEL_VARIABLE = "MICE_SPACE_MICE_MODEL"
CROSS_ENCODER_MODEL_VARIABLE = "MICE_SPACE_CROSS_ENCODER_MODEL"
PREENCODE_VARIABLE = "MICE_SPACE_PREENCODE"
QUICKSTART_MODELS = Path("mice-quickstart") / "models"
SAMPLE_CORPUS = Path(mice_rerank.__file__).parent / "sample_data" / "debian"

MAX_QUERY_CHARS = 300
MAX_PASSAGES = 50
MAX_PASSAGE_CHARS = 2000
BUILTIN_CANDIDATES = 20
HEATMAP_DOCUMENT_TOKENS = 40
SNIPPET_CHARS = 110
BATCH_SIZE = 32

BUILTIN_SOURCE = f"Built-in corpus: Debian package descriptions, BM25 top {BUILTIN_CANDIDATES}"
PASTED_SOURCE = "My passages (pasted below, one per line)"
SYSTEMS = ("BM25", "Cross-encoder", "MICE")

EXAMPLE_QUERIES = [
    "Java message broker - server",
    "minimal window manager written in C++",
    "Utility for barcode generation",
    "Common Lisp library for date and time manipulations",
    "debhelper addon to handle creation of system users",
]
EXAMPLE_PASSAGES = "\n".join(
    [
        "MICE encodes documents in its lower layers without the query, so their states can be cached.",
        "A cross-encoder reads the query and the document together in every layer.",
        "BM25 scores documents by term frequency, inverse document frequency and length normalisation.",
        "Bananas are rich in potassium and are eaten all over the world.",
        "Late interaction models such as ColBERT store one vector per document token.",
    ]
)
EXAMPLE_PASSAGE_QUERY = "why can document representations be computed in advance for re-ranking?"


class VisitorInputError(ValueError):
    """Input the visitor can fix (empty query, too many or too long passages); shown to them as is."""


@dataclass
class SystemRanking:
    """One system's scores for the candidates (aligned with ``Comparison.doc_ids``) and its measured latency."""

    name: str
    scores: list[float]
    seconds: float

    def order(self) -> list[int]:
        """Candidate indices by decreasing score; ties keep the candidates' order (BM25's, or the pasted order)."""
        return sorted(range(len(self.scores)), key=lambda i: -self.scores[i])


@dataclass
class Comparison:
    """The three rankings of one query's candidates and what the summary reports about them."""

    query: str
    doc_ids: list[str]
    texts: list[str]
    rankings: dict[str, SystemRanking]
    relevant: set[str] = field(default_factory=set)
    preencoded: int = 0
    encoded_now: int = 0
    encoding_seconds_saved: float = 0.0
    source_note: str = ""
    pasted: bool = False


def resolve_model(variable: str, default: Path) -> str:
    """The model named by the environment variable ``variable``, else the quickstart's folder ``default``."""
    value = os.environ.get(variable, "").strip()
    if not value:
        if not default.is_dir():
            raise FileNotFoundError(
                f"No model at {default.resolve()}: run `mice quickstart` from this folder first, or set {variable} "
                "to a model folder (or a Hub model id)."
            )
        return str(default)
    return value


class DocumentStateCache:
    """MICE document states by document id, filled in advance or on first use, in an ``indexing.DocumentStore`` (the
    store that indexes, evaluation and training use too).

    It also keeps how long each document took to encode (the call's time shared in proportion to token count),
    which is what a query whose candidates are cached saves compared with encoding them on the fly.
    """

    def __init__(self, model: MiceForSequenceClassification, tokenizer: PreTrainedTokenizerBase):
        self.encoder = DocumentEncoder(model, tokenizer, BATCH_SIZE, show_progress=True)
        self.store = DocumentStore.temporary(self.encoder.fingerprint)
        self.encoding_seconds: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.store

    def add(self, documents: dict[str, str]) -> float:
        """Encode the documents not yet cached; returns the seconds spent."""
        began = time.perf_counter()
        missing = self.store.encode_missing(documents, self.encoder)
        seconds = time.perf_counter() - began
        tokens = self.store.token_counts(missing) if missing else []
        for doc_id, count in zip(missing, tokens, strict=True):
            self.encoding_seconds[doc_id] = seconds * count / sum(tokens)
        return seconds

    def get(self, doc_ids: list[str]) -> MiceDocumentStates:
        """The cached states of ``doc_ids``, in that order, as one batch."""
        return self.store.get(doc_ids)


class RerankDemo:
    """The Space's models, the built-in corpus with its BM25 index, and the handlers the UI calls."""

    def __init__(self, mice_model: str, cross_encoder_model: str, preencode: str = "examples"):
        if preencode not in ("examples", "all"):
            raise ValueError(f"{PREENCODE_VARIABLE}={preencode!r}: use 'examples' or 'all'")
        self.mice_name, self.cross_encoder_name = mice_model, cross_encoder_model
        self.mice, self.tokenizer = load_mice(mice_model)
        self.cross_encoder = load_cross_encoder(cross_encoder_model)
        self.corpus = load_beir(SAMPLE_CORPUS, "test")
        self.bm25 = BM25Retriever().index(self.corpus.corpus)
        self.relevant_by_query = {
            self.corpus.queries[q].casefold(): set(judged) for q, judged in self.corpus.qrels.items()
        }
        self.cache = DocumentStateCache(self.mice, self.tokenizer)
        self.preencode = preencode
        began = time.perf_counter()
        if preencode == "all":
            pool = list(self.corpus.corpus)
        else:
            pool = [d for query in EXAMPLE_QUERIES for d in self.bm25_candidates(query)[0]]
        self.cache.add({d: self.corpus.document_text(d) for d in pool})
        self.preencode_seconds = time.perf_counter() - began
        self.cross_encoder.predict([("warm up", "the cross-encoder")], show_progress_bar=False)
        logger.info("pre-encoded %d documents in %.1f s", len(self.cache), self.preencode_seconds)

    @classmethod
    def from_environment(cls) -> RerankDemo:
        """Build the demo from the Space's configuration (see the module docstring)."""
        return cls(
            resolve_model(MICE_MODEL_VARIABLE, QUICKSTART_MODELS / "mice"),
            resolve_model(CROSS_ENCODER_MODEL_VARIABLE, QUICKSTART_MODELS / "cross-encoder"),
            os.environ.get(PREENCODE_VARIABLE, "examples").strip() or "examples",
        )

    def bm25_candidates(self, query: str) -> tuple[list[str], list[float]]:
        """The built-in corpus's BM25 top candidates for ``query`` (ids and scores, best first)."""
        run = self.bm25.search({"q": query}, k=BUILTIN_CANDIDATES)["q"]
        ranked = sorted(run, key=run.get, reverse=True)
        return ranked, [run[d] for d in ranked]

    def describe_cache(self) -> str:
        """What was encoded in advance, for the page header."""
        what = (
            "the whole corpus"
            if self.preencode == "all"
            else f"the BM25 top {BUILTIN_CANDIDATES} of the {len(EXAMPLE_QUERIES)} example queries"
        )
        return (
            f"MICE document states encoded at start-up: {len(self.cache):,} of {len(self.corpus.corpus):,} built-in "
            f"documents ({what}) in {self.preencode_seconds:.1f} s. Other documents are encoded when a query first "
            "needs them, then kept."
        )

    @torch.inference_mode()
    def compare_builtin(self, query: str) -> Comparison:
        """BM25 over the built-in corpus, then the cross-encoder and MICE (cached document states) on its top."""
        began = time.perf_counter()
        doc_ids, bm25_scores = self.bm25_candidates(query)
        bm25_seconds = time.perf_counter() - began
        if not doc_ids:
            raise VisitorInputError(
                "BM25 found no document sharing a word with this query (stopwords do not count); rephrase it."
            )
        texts = [self.corpus.document_text(d) for d in doc_ids]
        preencoded = sum(d in self.cache for d in doc_ids)
        saved = sum(self.cache.encoding_seconds[d] for d in doc_ids if d in self.cache)
        began = time.perf_counter()
        self.cache.add(dict(zip(doc_ids, texts, strict=True)))
        query_inputs = self.mice.tokenize_queries(self.tokenizer, [query])
        mice_scores = self.mice.score(**query_inputs, document_states=self.cache.get(doc_ids)).logits[:, 0]
        mice_seconds = time.perf_counter() - began
        return self.comparison(
            query,
            doc_ids,
            texts,
            SystemRanking("BM25", bm25_scores, bm25_seconds),
            SystemRanking("MICE", mice_scores.tolist(), mice_seconds),
            relevant=self.relevant_by_query.get(query.casefold(), set()),
            preencoded=preencoded,
            encoded_now=len(doc_ids) - preencoded,
            encoding_seconds_saved=saved,
            source_note=(
                f"{len(doc_ids)} candidates: BM25's top {BUILTIN_CANDIDATES} of {len(self.corpus.corpus):,} Debian "
                "package descriptions"
            ),
        )

    @torch.inference_mode()
    def compare_passages(self, query: str, passages: list[str]) -> Comparison:
        """BM25, the cross-encoder and MICE over pasted passages; MICE encodes them on the fly."""
        doc_ids = [f"passage {i}" for i in range(1, len(passages) + 1)]
        began = time.perf_counter()
        run = (
            BM25Retriever()
            .index({d: {"title": "", "text": p} for d, p in zip(doc_ids, passages, strict=True)})
            .search({"q": query}, k=len(passages))["q"]
        )
        bm25_scores = [run.get(d, 0.0) for d in doc_ids]
        bm25_seconds = time.perf_counter() - began
        began = time.perf_counter()
        # Encoded in length-sorted batches, as the built-in corpus was: one batch padded to the longest passage
        # would spend most of its time on padding.
        passage_states = DocumentStateCache(self.mice, self.tokenizer)
        passage_states.add(dict(zip(doc_ids, passages, strict=True)))
        query_inputs = self.mice.tokenize_queries(self.tokenizer, [query])
        mice_scores = self.mice.score(**query_inputs, document_states=passage_states.get(doc_ids)).logits[:, 0]
        mice_seconds = time.perf_counter() - began
        return self.comparison(
            query,
            doc_ids,
            passages,
            SystemRanking("BM25", bm25_scores, bm25_seconds),
            SystemRanking("MICE", mice_scores.tolist(), mice_seconds),
            encoded_now=len(passages),
            pasted=True,
            source_note=f"{len(passages)} pasted passages (BM25 indexes them on the spot)",
        )

    def comparison(
        self, query: str, doc_ids: list[str], texts: list[str], bm25: SystemRanking, mice: SystemRanking, **details
    ) -> Comparison:
        """Add the cross-encoder's ranking of the same candidates to BM25's and MICE's."""
        rankings = {"BM25": bm25, "Cross-encoder": self.cross_encoder_ranking(query, texts), "MICE": mice}
        return Comparison(query=query, doc_ids=doc_ids, texts=texts, rankings=rankings, **details)

    def cross_encoder_ranking(self, query: str, texts: list[str]) -> SystemRanking:
        """Score every (query, text) pair jointly with the cross-encoder, timed."""
        began = time.perf_counter()
        scores = self.cross_encoder.predict(
            [(query, text) for text in texts], batch_size=BATCH_SIZE, show_progress_bar=False
        )
        return SystemRanking("Cross-encoder", [float(s) for s in scores], time.perf_counter() - began)

    @torch.inference_mode()
    def attention_figure(self, query: str, document: str, label: str) -> Figure:
        """Heatmaps of MICE's cross-attention, one per interaction layer, averaged over heads.

        Rows are query tokens, columns the document tokens that receive the most attention summed over the query
        tokens and layers (shown in document order). A row of zeros is a query token that does not cross-attend
        (MICE's query [CLS] reads the document only through the other query tokens).
        """
        query_inputs = self.mice.tokenize_queries(self.tokenizer, [query])
        document_inputs = self.mice.tokenize_documents(self.tokenizer, [document])
        states = self.mice.encode_documents(**document_inputs)
        output = self.mice.score(**query_inputs, document_states=states, output_attentions=True)
        query_tokens = self.tokenizer.convert_ids_to_tokens(query_inputs["query_input_ids"][0])
        document_tokens = self.tokenizer.convert_ids_to_tokens(document_inputs["document_input_ids"][0])
        layers = [attention[0].mean(dim=0) for attention in output.cross_attentions]  # (Lq, Ld) each
        shown = torch.stack(layers).sum(dim=(0, 1)).topk(min(HEATMAP_DOCUMENT_TOKENS, len(document_tokens)))
        columns = shown.indices.sort().values
        fusion = self.mice.config.fusion_layer
        figure, axes = plt.subplots(
            len(layers),
            1,
            figsize=(11, len(layers) * (1.6 + 0.22 * len(query_tokens))),
            squeeze=False,
            layout="constrained",
        )
        for index, (axis, attention) in enumerate(zip(axes[:, 0], layers, strict=True)):
            image = axis.imshow(attention[:, columns].numpy(), aspect="auto", cmap="viridis", vmin=0)
            axis.set_title(f"interaction layer {fusion + index} (mean of heads)", fontsize=9)
            axis.set_yticks(range(len(query_tokens)), query_tokens, fontsize=8)
            axis.set_xticks(range(len(columns)), [document_tokens[i] for i in columns], rotation=90, fontsize=7)
            figure.colorbar(image, ax=axis, fraction=0.03, pad=0.01)
        figure.suptitle(
            f"{label}: MICE score {output.logits[0, 0].item():.3f}; the {len(columns)} most-attended of "
            f"{len(document_tokens)} document tokens",
            fontsize=10,
        )
        plt.close(figure)  # gradio renders the Figure object; pyplot must not keep it alive
        return figure


def load_mice(name: str) -> tuple[MiceForSequenceClassification, PreTrainedTokenizerBase]:
    """Load the MICE model and its tokenizer, refusing a model of another kind with a clear message."""
    model_type = AutoConfig.from_pretrained(name).model_type
    if model_type != "mice":
        raise ValueError(
            f"{MICE_MODEL_VARIABLE}={name} holds a {model_type!r} model; it must name a MICE model "
            "(e.g. mice-quickstart/models/mice)."
        )
    return MiceForSequenceClassification.from_pretrained(name).eval(), AutoTokenizer.from_pretrained(name)


def load_cross_encoder(name: str) -> CrossEncoder:
    """Load the cross-encoder with raw logits as scores (no sigmoid), on the same scale as MICE's."""
    model_type = AutoConfig.from_pretrained(name).model_type
    if model_type == "mice":
        raise ValueError(
            f"{CROSS_ENCODER_MODEL_VARIABLE}={name} holds a MICE model; it must name the full cross-encoder "
            "(e.g. mice-quickstart/models/cross-encoder)."
        )
    return CrossEncoder(name, activation_fn=torch.nn.Identity())


def parse_query(query: str | None) -> str:
    """The stripped query, or a VisitorInputError saying what is wrong with it."""
    query = (query or "").strip()
    if not query:
        raise VisitorInputError("Enter a query first (for example one of the examples below).")
    if len(query) > MAX_QUERY_CHARS:
        raise VisitorInputError(f"The query has {len(query):,} characters; the limit is {MAX_QUERY_CHARS}. Shorten it.")
    return query


def parse_passages(text: str | None) -> list[str]:
    """Pasted candidates, one per non-empty line, within the demo's limits."""
    passages = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not passages:
        raise VisitorInputError("Paste at least one passage, one per line, or choose the built-in corpus.")
    if len(passages) > MAX_PASSAGES:
        raise VisitorInputError(f"You pasted {len(passages)} passages; the limit is {MAX_PASSAGES}. Remove some lines.")
    for number, passage in enumerate(passages, start=1):
        if len(passage) > MAX_PASSAGE_CHARS:
            raise VisitorInputError(
                f"Passage {number} has {len(passage):,} characters; the limit is {MAX_PASSAGE_CHARS:,}. "
                "Shorten it or split it over several lines."
            )
    return passages


def rank_change(before: int, after: int) -> str:
    """A rank movement as the visitor reads it: ▲ moved up, ▼ moved down, = unchanged."""
    if after < before:
        return f"▲{before - after}"
    if after > before:
        return f"▼{after - before}"
    return "="


def ranking_table(comparison: Comparison, system: str) -> pd.DataFrame:
    """One system's ranking: rank, change against BM25, score and the document."""
    bm25_rank = {index: rank for rank, index in enumerate(comparison.rankings["BM25"].order(), start=1)}
    ranking = comparison.rankings[system]
    rows = []
    for rank, index in enumerate(ranking.order(), start=1):
        doc_id, text = comparison.doc_ids[index], comparison.texts[index]
        mark = "✓ " if doc_id in comparison.relevant else ""
        snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rstrip() + "…"
        rows.append(
            {
                "#": rank,
                "vs BM25": "" if system == "BM25" else rank_change(bm25_rank[index], rank),
                "score": round(ranking.scores[index], 3),
                "document": f"{mark}{doc_id}: {snippet}",
            }
        )
    return pd.DataFrame(rows, columns=["#", "vs BM25", "score", "document"])


def plural(count: int, noun: str) -> str:
    """``3 documents``, ``1 document``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_markdown(comparison: Comparison) -> str:
    """Latencies, what MICE had encoded in advance, and how far MICE agrees with the cross-encoder."""
    milliseconds = {name: ranking.seconds * 1000 for name, ranking in comparison.rankings.items()}
    lines = [
        f"**{comparison.source_note}.** Latency on this machine's CPU: "
        + " · ".join(f"{name} **{ms:,.0f} ms**" for name, ms in milliseconds.items())
        + "."
    ]
    if comparison.pasted:
        lines.append(
            f"MICE encoded the {comparison.encoded_now} pasted passages on the fly (text a visitor pastes cannot be "
            "encoded in advance); for the built-in corpus it scores document states computed ahead of time."
        )
    elif comparison.preencoded:
        saved = comparison.encoding_seconds_saved * 1000
        encoded_now = f", and encoded {plural(comparison.encoded_now, 'other')} now" if comparison.encoded_now else ""
        lines.append(
            f"MICE found {comparison.preencoded} of the {len(comparison.doc_ids)} candidates already encoded "
            f"(document states computed in advance){encoded_now}. Encoding {plural(comparison.preencoded, 'document')} "
            f"on the fly would have added ≈{saved:,.0f} ms (measured when they were encoded): MICE took "
            f"{milliseconds['MICE']:,.0f} ms instead of ≈{milliseconds['MICE'] + saved:,.0f} ms."
        )
    else:
        lines.append(
            f"None of these {len(comparison.doc_ids)} candidates had been encoded in advance: MICE encoded them now "
            "(included in its latency) and keeps them for the next query that needs them."
        )
    if milliseconds["MICE"] > 0:
        lines.append(
            f"MICE was **{milliseconds['Cross-encoder'] / milliseconds['MICE']:.1f}×** as fast as the cross-encoder."
        )
    if len(comparison.doc_ids) > 1:
        tau = kendalltau(comparison.rankings["MICE"].scores, comparison.rankings["Cross-encoder"].scores).statistic
        tau = "undefined (all scores tied)" if math.isnan(tau) else f"{tau:.2f}"
        top = min(5, len(comparison.doc_ids))
        overlap = set(comparison.rankings["MICE"].order()[:top]) & set(
            comparison.rankings["Cross-encoder"].order()[:top]
        )
        lines.append(f"Agreement with the cross-encoder: Kendall τ {tau}, {len(overlap)} of the top {top} in common.")
    if comparison.relevant:
        lines.append("✓ marks the document judged relevant for this query in the sample's test qrels.")
    return "\n\n".join(lines)


def visitor_safe(handler: Callable) -> Callable:
    """Show visitors a clear message for their own mistakes and a generic one for ours, never a traceback."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except VisitorInputError as error:
            raise gr.Error(str(error), title="Please check your input", print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            logger.exception("handler %s failed", handler.__name__)
            raise gr.Error(
                "Something went wrong on our side while ranking; the details are in the Space's logs. "
                "Try again, or another query.",
                print_exception=False,
            ) from None

    return wrapped


class DemoHandlers:
    """The functions the UI's events call; they take and return plain values, so tests can call them directly."""

    def __init__(self, demo: RerankDemo):
        self.demo = demo

    def rerank(self, query: str, source: str, passages: str) -> tuple:
        """Rank with the three systems; returns the summary, three tables, the heatmap choices, state and plot."""
        query = parse_query(query)
        if source == PASTED_SOURCE:
            comparison = self.demo.compare_passages(query, parse_passages(passages))
        elif source == BUILTIN_SOURCE:
            comparison = self.demo.compare_builtin(query)
        else:
            raise VisitorInputError(f"Choose a source of candidates: {BUILTIN_SOURCE!r} or {PASTED_SOURCE!r}.")
        tables = [
            gr.Dataframe(
                ranking_table(comparison, name),
                label=f"{name} · {comparison.rankings[name].seconds * 1000:,.0f} ms",
            )
            for name in SYSTEMS
        ]
        mice_order = comparison.rankings["MICE"].order()
        labels = [f"MICE #{rank}: {comparison.doc_ids[i]}" for rank, i in enumerate(mice_order, start=1)]
        documents = {label: comparison.texts[i] for label, i in zip(labels, mice_order, strict=True)}
        state = {"query": query, "documents": documents}
        figure = self.demo.attention_figure(query, documents[labels[0]], labels[0])
        return (summary_markdown(comparison), *tables, gr.Dropdown(choices=labels, value=labels[0]), state, figure)

    def attention(self, choice: str, state: dict | None) -> Figure:
        """The heatmap for one result of the last ranking."""
        if not state or choice not in state.get("documents", {}):
            raise VisitorInputError("Rank a query first, then choose one of its results.")
        return self.demo.attention_figure(state["query"], state["documents"][choice], choice)


def training_budget_of(model: str) -> str:
    """A model folder's training budget from its training record ("not recorded" for a Hub id or a bare folder)."""
    try:
        return training_budget(read_training_record(model))
    except RecordError:
        return "with a budget not recorded"


def build_demo(demo: RerankDemo) -> gr.Blocks:
    """The Gradio page. Only the query, the source of candidates and the pasted passages come from the visitor."""
    handlers = DemoHandlers(demo)
    with gr.Blocks(title="MICE re-ranking demo") as blocks:
        gr.Markdown(
            "# MICE vs a cross-encoder\n"
            "MICE (Minimal Interaction Cross-Encoder) encodes documents in its lower layers without the query, so "
            "their states can be computed **in advance**; at query time only the query runs, through a few "
            "interaction layers that cross-attend to the stored document states. Compare its ranking and latency "
            "with the full cross-encoder (the quickstart converts MICE from it), and with BM25.\n\n"
            f"Models: MICE `{Path(demo.mice_name).name}` (fusion layer {demo.mice.config.fusion_layer}, "
            f"{demo.mice.config.interaction_layers} interaction layers; trained {training_budget_of(demo.mice_name)}), "
            f"cross-encoder `{Path(demo.cross_encoder_name).name}` (trained "
            f"{training_budget_of(demo.cross_encoder_name)}). {demo.describe_cache()}"
        )
        summary = gr.Markdown(render=False)
        tables = [
            gr.Dataframe(
                label=name,
                wrap=True,
                interactive=False,
                column_widths=["9%", "16%", "16%", "59%"],
                render=False,
            )
            for name in SYSTEMS
        ]
        choice = gr.Dropdown(label="Heatmap for result", choices=[], interactive=True, render=False)
        heatmap_heading = gr.Markdown(
            "### Which document tokens each query token attends to in MICE's interaction layers", render=False
        )
        plot = gr.Plot(show_label=False, render=False)
        state = gr.State()
        outputs = [summary, *tables, choice, state, plot]
        rerank = visitor_safe(handlers.rerank)
        with gr.Row():
            with gr.Column(scale=3):
                query = gr.Textbox(
                    label=f"Query (up to {MAX_QUERY_CHARS} characters)", max_length=MAX_QUERY_CHARS, lines=1
                )
                source = gr.Radio([BUILTIN_SOURCE, PASTED_SOURCE], value=BUILTIN_SOURCE, label="Candidates")
                button = gr.Button("Rank", variant="primary")
            passages = gr.Textbox(
                label=(
                    f"Your passages: one per line (blank lines are ignored), at most {MAX_PASSAGES} passages "
                    f"of {MAX_PASSAGE_CHARS:,} characters each"
                ),
                lines=8,
                scale=4,
            )
        examples = gr.Examples(
            [[q, BUILTIN_SOURCE, ""] for q in EXAMPLE_QUERIES]
            + [[EXAMPLE_PASSAGE_QUERY, PASTED_SOURCE, EXAMPLE_PASSAGES]],
            inputs=[query, source, passages],
            cache_examples=False,  # latencies are measured live, never replayed
            label="Examples (one click ranks them)",
            example_labels=[f"{q} (built-in corpus)" for q in EXAMPLE_QUERIES]
            + [f"{EXAMPLE_PASSAGE_QUERY} (5 pasted passages)"],
        )
        summary.render()
        with gr.Row():
            for table in tables:
                table.render()
        heatmap_heading.render()
        choice.render()
        plot.render()
        # One queue for everything that runs the models: visitors wait their turn, the document-state cache is
        # filled by one event at a time, and a latency is never measured while another ranking competes for the CPU.
        models = {"concurrency_id": "models", "concurrency_limit": 1}
        button.click(rerank, [query, source, passages], outputs, api_name="rerank", **models)
        query.submit(rerank, [query, source, passages], outputs, api_visibility="private", **models)
        # A click on an example fills the inputs, then ranks them.
        examples.load_input_event.then(rerank, [query, source, passages], outputs, api_visibility="private", **models)
        choice.input(visitor_safe(handlers.attention), [choice, state], plot, api_name="attention", **models)
    return blocks


def main() -> None:
    """Start the Space (locally: ``python spaces/mice-rerank-demo/app.py``)."""
    logging.basicConfig(level=logging.WARNING)
    logger.setLevel(logging.INFO)
    try:
        demo = RerankDemo.from_environment()
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"mice-rerank-demo: {error}") from None
    from entity_lens_tab import with_entity_lens_tab  # a sibling module: the Space runs app.py from this folder

    with_entity_lens_tab(build_demo(demo)).launch()


if __name__ == "__main__":
    main()
