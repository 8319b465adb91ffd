"""How well decoded mentions reconstruct the reference mentions.

- exact match: the stripped strings are equal (case and accents count);
- partial match: one stripped string contains the other. An empty decoding matches nothing (the paper's code counts
  it as contained in every reference, which would reward a model that writes nothing);
- chrF: sacrebleu's corpus-level chrF (character 6-grams, beta 2), the implementation HF `evaluate`'s `chrf` wraps,
  on a 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Sequence


def exact_match(prediction: str, reference: str) -> bool:
    return prediction.strip() == reference.strip()


def partial_match(prediction: str, reference: str) -> bool:
    prediction, reference = prediction.strip(), reference.strip()
    return bool(prediction) and (prediction in reference or reference in prediction)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sacrebleu.metrics import CHRF  # the entity-lens extra; the lens itself does not need it

    return CHRF().corpus_score(list(predictions), [list(references)]).score


def mention_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | None]:
    """Exact match and partial match (fractions) and chrF (0-100) over paired predictions and references (None for
    an empty set, so that the JSON records stay standard)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    count = len(references)
    if not count:
        return {"examples": 0, "exact_match": None, "partial_match": None, "chrf": None}
    return {
        "examples": count,
        "exact_match": sum(map(exact_match, predictions, references)) / count,
        "partial_match": sum(map(partial_match, predictions, references)) / count,
        "chrf": chrf(predictions, references),
    }
