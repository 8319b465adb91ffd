"""Document encoding speed of dual encoders, measured side by side: the models take turns, round after round, on the
same texts with the same batch size, so a change in the machine's load hits them alike. ``scripts/bench_embedder.py``
and the quickstart's first-stage table report it."""

from __future__ import annotations

import time

import numpy as np
from sentence_transformers import SentenceTransformer


def encoding_speed(
    models: dict[str, SentenceTransformer], texts: list[str], rounds: int = 5, batch_size: int = 32
) -> dict[str, list[float]]:
    """Documents per second of each model in each round (after one warm-up batch each); each model encodes with its
    own ``max_seq_length``, so set the same one on all of them for a fair comparison.

    Raises:
        ValueError: no texts, no models or no rounds.
    """
    if not texts or not models or rounds < 1:
        raise ValueError(f"need texts, models and at least one round; got {len(texts)}, {len(models)}, {rounds}")
    for model in models.values():
        model.encode(texts[:batch_size], batch_size=batch_size)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
            speeds[name].append(len(texts) / (time.perf_counter() - start))
    return speeds


def median_speed(speeds: dict[str, list[float]]) -> dict[str, float]:
    """The median documents per second of each model over its rounds."""
    return {name: float(np.median(values)) for name, values in speeds.items()}
