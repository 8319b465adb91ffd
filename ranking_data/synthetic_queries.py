"""Training queries made from a corpus, for collections that come without queries.

Converting a cross-encoder into MICE needs queries whose candidate lists the parent can score, not relevance labels.
When a folder holds only ``corpus.jsonl``, each sampled document gives one pseudo-query, in the manner of the
"inverse cloze" and title-as-query heuristics: its title, its leading sentence, or a span of its text, each cut to
a query's length. The parent then scores BM25's candidates for it, so the pseudo-query needs only to be a plausible
search, not a perfect one: the document it came from is one candidate among many, and the parent decides the order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

STRATEGIES = ("title", "lead", "span")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _words(text: str) -> list[str]:
    return text.split()


def pseudo_query(
    document: Mapping[str, str], rng: random.Random, min_words: int = 3, max_words: int = 12
) -> str | None:
    """One pseudo-query from a ``{"title", "text"}`` document, or None when it has too little text.

    The strategy is drawn among those the document allows: ``title`` (a title of at least two words), ``lead``
    (the first sentence, cut to ``max_words``) and ``span`` (``min_words``–``max_words`` consecutive words).
    """
    title = _words(document.get("title") or "")
    text = _words(document.get("text") or "")
    lead = _words(_SENTENCE_END.split(" ".join(text), maxsplit=1)[0]) if text else []
    options = []
    if len(title) >= 2:
        options.append(("title", title[:max_words]))
    if len(lead) >= min_words:
        options.append(("lead", lead[:max_words]))
    if len(text) >= min_words:
        length = rng.randint(min_words, min(max_words, len(text)))
        start = rng.randint(0, len(text) - length)
        options.append(("span", text[start : start + length]))
    if not options:
        return None
    _, words = rng.choice(options)
    return " ".join(words)


def generate_queries(
    corpus: Mapping[str, Mapping[str, str]], count: int, seed: int = 0, min_words: int = 3, max_words: int = 12
) -> dict[str, str]:
    """``{query_id: text}``: one pseudo-query for each of ``count`` documents drawn reproducibly with ``seed``.

    Query ids are ``generated:<doc_id>``. Documents with too little text are skipped.

    Raises:
        ValueError: ``count`` is not positive, or no document has enough text for a query.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    rng = random.Random(seed)
    order = sorted(corpus)
    rng.shuffle(order)
    queries: dict[str, str] = {}
    for doc_id in order:
        query = pseudo_query(corpus[doc_id], rng, min_words, max_words)
        if query is not None:
            queries[f"generated:{doc_id}"] = query
            if len(queries) == count:
                break
    if not queries:
        raise ValueError(
            f"none of the corpus's {len(corpus)} documents has a title of two words or a text of {min_words} words "
            "to make a query from; give the folder a queries.jsonl"
        )
    return queries
