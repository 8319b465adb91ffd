"""Document encoding speed of dual encoders, measured side by side: the models take turns, round after round, on the
same texts with the same batch size, so a change in the machine's load hits them alike. ``scripts/bench_embedder.py``
and the quickstart's first-stage table report it."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device


def _encode_runner(model: SentenceTransformer, texts: list[str], batch_size: int) -> Callable[[bool], None]:
    """Texts in, embeddings out through ``encode`` (tokenization included, as users call it)."""

    def run(warm_up: bool) -> None:
        model.encode(texts[:batch_size] if warm_up else texts, batch_size=batch_size, convert_to_numpy=True)

    return run


def _forward_runner(model: SentenceTransformer, texts: list[str], batch_size: int) -> Callable[[bool], None]:
    """The forward passes alone, on batches tokenized once beforehand and already on the model's device. The texts are
    sorted by length first, as ``encode`` sorts them, so the batches hold the same padding."""
    ordered = sorted(texts, key=len, reverse=True)
    batches = [
        batch_to_device(model.preprocess(ordered[start : start + batch_size]), model.device)
        for start in range(0, len(ordered), batch_size)
    ]

    def run(warm_up: bool) -> None:
        with torch.inference_mode():
            for features in batches[:1] if warm_up else batches:
                model(dict(features))  # a copy: the modules add their outputs to the dict they get
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)  # kernels run asynchronously: wait for them before the clock stops

    return run


def encoding_speed(
    models: dict[str, SentenceTransformer],
    texts: list[str],
    rounds: int = 5,
    batch_size: int = 32,
    pretokenized: bool = False,
) -> dict[str, list[float]]:
    """Documents per second of each model in each round (after one warm-up batch each); each model encodes with its
    own ``max_seq_length``, so set the same one on all of them for a fair comparison. With ``pretokenized``, only the
    models' forward passes are timed: on a GPU, tokenization on the CPU can otherwise bound both models alike.

    Raises:
        ValueError: no texts, no models or no rounds.
    """
    if not texts or not models or rounds < 1:
        raise ValueError(f"need texts, models and at least one round; got {len(texts)}, {len(models)}, {rounds}")
    make_runner = _forward_runner if pretokenized else _encode_runner
    runners = {name: make_runner(model, texts, batch_size) for name, model in models.items()}
    for run in runners.values():
        run(warm_up=True)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(warm_up=False)
            speeds[name].append(len(texts) / (time.perf_counter() - start))
    return speeds


def median_speed(speeds: dict[str, list[float]]) -> dict[str, float]:
    """The median documents per second of each model over its rounds."""
    return {name: float(np.median(values)) for name, values in speeds.items()}
