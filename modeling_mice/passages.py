"""Long documents: overlapping passages and their scores aggregated per document (MaxP, FirstP, sum of the top).

A document longer than a model's window is cut into passages of that window, each starting `stride` tokens after
the previous one (the tokenizer's own overflow, so a passage is exactly what the model would see), every passage is
scored, and a document's score is the best passage's (MaxP), the first passage's (FirstP: what truncation gives), or
the sum of its `top` best (Dai & Callan, "Deeper Text Understanding for IR with Contextual Neural Language Modeling",
SIGIR 2019). The same functions serve MICE (documents tokenized alone) and cross-encoders (query-document pairs).
Torch and transformers only: this file may travel with the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AGGREGATIONS = ("maxp", "firstp", "sumtop")


@dataclass(frozen=True)
class LongDocuments:
    """How documents longer than the model's window are scored.

    Attributes:
        aggregation: `"maxp"` (best passage), `"firstp"` (first passage) or `"sumtop"` (sum of the `top` best).
        stride: tokens between the starts of consecutive passages (default: half a passage, so they overlap by half).
        top: how many best passages `"sumtop"` adds up.
    """

    aggregation: str = "maxp"
    stride: int | None = None
    top: int = 3

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"long-document aggregation {self.aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"passage stride must be at least 1 token, got {self.stride}")
        if self.top < 1:
            raise ValueError(f"sumtop needs top >= 1, got {self.top}")

    @classmethod
    def parse(cls, spec: str, stride: int | None = None) -> LongDocuments:
        """`"maxp"`, `"firstp"` or `"sumtop"` / `"sumtop:K"` (the K best passages), with an optional stride."""
        name, _, top = spec.partition(":")
        if top and name != "sumtop":
            raise ValueError(f"only sumtop takes a number of passages (sumtop:K), got {spec!r}")
        try:
            return cls(name, stride, int(top) if top else 3)
        except ValueError as error:
            raise ValueError(f"{error} (long-document spec {spec!r}: maxp, firstp or sumtop:K)") from None


def _overlap(window: int, stride: int | None) -> int:
    """The tokenizer's `stride` (tokens shared by consecutive passages) for passages of `window` text tokens."""
    if window < 1:
        raise ValueError("the model's window leaves no room for document tokens")
    stride = max(window // 2, 1) if stride is None else stride
    if stride > window:
        raise ValueError(f"passage stride {stride} is longer than a passage ({window} tokens): text would be skipped")
    return window - stride


def tokenize_passages(
    tokenizer,
    texts: list[str],
    max_length: int,
    stride: int | None = None,
    query: str | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Tokenize `texts` into overlapping passages of at most `max_length` tokens (special tokens included).

    Alone (`query=None`: `[CLS] passage [SEP]`, as MICE encodes documents) or as `(query, passage)` pairs (what a
    cross-encoder reads; the query is never cut). Consecutive passages start `stride` text tokens apart (default:
    half a passage); a text that fits gives one passage, an empty text one `[CLS] [SEP]`. Returns the tokenizer's
    right-padded tensors and `passage_to_text (P,)`, the index in `texts` of each passage, in order.
    """
    if not texts:
        raise ValueError("no documents were given (empty list)")
    if query is None:
        window = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        arguments = {"text": texts, "truncation": True}
    else:
        query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        window = max_length - query_tokens - tokenizer.num_special_tokens_to_add(pair=True)
        arguments = {"text": [query] * len(texts), "text_pair": texts, "truncation": "only_second"}
    encoded = tokenizer(
        **arguments,
        max_length=max_length,
        stride=_overlap(window, stride),
        return_overflowing_tokens=True,
        padding=True,
        return_tensors="pt",
    )
    passage_to_text = encoded.pop("overflow_to_sample_mapping")
    return dict(encoded), passage_to_text


def aggregate_passage_scores(
    scores: torch.Tensor, passage_to_document: torch.Tensor, documents: int, settings: LongDocuments
) -> torch.Tensor:
    """Scores `(P,)` of passages (in document order, as `tokenize_passages` gives them) -> `(documents,)`."""
    if scores.dim() != 1 or scores.shape != passage_to_document.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and passage_to_document {tuple(passage_to_document.shape)}")
    index = passage_to_document.to(scores.device)
    if settings.aggregation == "maxp":
        return scores.new_full((documents,), float("-inf")).scatter_reduce(0, index, scores, "amax")
    if settings.aggregation == "firstp":
        positions = torch.arange(len(scores), device=scores.device)
        first = torch.full((documents,), len(scores), device=scores.device).scatter_reduce(0, index, positions, "amin")
        return scores[first]
    counts = torch.bincount(index, minlength=documents)
    rank = torch.arange(len(scores), device=scores.device) - (counts.cumsum(0) - counts)[index]
    table = scores.new_full((documents, int(counts.max())), float("-inf"))
    table[index, rank] = scores
    best = table.topk(min(settings.top, table.shape[1]), dim=1).values
    return best.masked_fill(best == float("-inf"), 0.0).sum(dim=1)


__all__ = ["AGGREGATIONS", "LongDocuments", "aggregate_passage_scores", "tokenize_passages"]
