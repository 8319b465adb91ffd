"""BM25 first stage with bm25s, set up as the reference figures in ``../shared/data/README.md`` were measured:
Lucene BM25 (k1=0.9, b=0.4), English stopwords, Snowball stemmer, indexing ``title + " " + text``.
"""

from __future__ import annotations

import bm25s
import numpy as np
import Stemmer

from .beir import Run


class BM25Retriever:
    """Index a corpus once, then retrieve the top-k documents of many queries.

    Example:
        >>> retriever = BM25Retriever().index({"d1": {"title": "", "text": "cats purr"}})
        >>> retriever.search({"q1": "purring cats"}, k=1)
        {'q1': {'d1': ...}}
    """

    def __init__(self, k1: float = 0.9, b: float = 0.4, language: str = "english", show_progress: bool = False):
        self.k1, self.b = k1, b
        self.stemmer = Stemmer.Stemmer(language)
        self.stopwords = "en" if language == "english" else None
        self.show_progress = show_progress
        self.doc_ids: list[str] = []
        self.model: bm25s.BM25 | None = None

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(
            texts, stopwords=self.stopwords, stemmer=self.stemmer, return_ids=False, show_progress=False
        )

    def index(self, corpus: dict[str, dict[str, str]]) -> BM25Retriever:
        """Index ``{doc_id: {"title", "text"}}``; returns ``self`` for chaining."""
        if not corpus:
            raise ValueError("cannot index an empty corpus")
        self.doc_ids = list(corpus)
        texts = [f"{doc.get('title') or ''} {doc.get('text') or ''}".strip() for doc in corpus.values()]
        self.model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        self.model.index(self._tokenize(texts), show_progress=self.show_progress)
        return self

    def search(self, queries: dict[str, str], k: int = 100) -> Run:
        """The top-k documents of each query as ``{query_id: {doc_id: score}}``.

        Documents with a zero score (no query term in common) are left out, so a query whose terms are all
        stopwords gets an empty ranking rather than an arbitrary one.
        """
        if self.model is None:
            raise RuntimeError("call index(corpus) before search(queries)")
        if not queries:
            return {}
        k = min(k, len(self.doc_ids))
        query_ids = list(queries)
        tokens = self._tokenize([queries[q] for q in query_ids])
        # bm25s rejects a query with no token at all; score those as empty rankings.
        nonempty = [i for i, t in enumerate(tokens) if t]
        run: Run = {query_id: {} for query_id in query_ids}
        if nonempty:
            indices, scores = self.model.retrieve(
                [tokens[i] for i in nonempty], k=k, show_progress=self.show_progress, n_threads=0
            )
            for row, i in enumerate(nonempty):
                keep = scores[row] > 0
                run[query_ids[i]] = {
                    self.doc_ids[index]: float(score)
                    for index, score in zip(np.asarray(indices[row])[keep], np.asarray(scores[row])[keep], strict=True)
                }
        return run
