"""Dense retrieval with the early-layer embeddings of every layer at once: the zero-shot curves.

One forward pass through a cross-encoder gives the embeddings of all its layers, so the retrieval effectiveness of
layer 0, 1, ..., k costs what layer k alone costs. :func:`early_layer_runs` embeds a BEIR collection (resumably,
chunk by chunk) and searches it exactly (cosine, faiss) with the queries' embeddings of the same layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.first_stage import cache_key, encode_in_chunks, exact_search
from ranking_data.beir import BeirData, Run

from .early_layers import EarlyLayerEncoder, EarlyLayerError, InputFormat, Pooling


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def early_layer_runs(
    encoder: EarlyLayerEncoder,
    data: BeirData,
    layers: Sequence[int],
    input_format: InputFormat = "single",
    k: int = 1000,
    pooling: Pooling = "mean",
    max_length: int | None = None,
    batch_size: int = 32,
    cache_folder: str | Path | None = None,
    show_progress: bool = False,
) -> tuple[dict[int, Run], dict]:
    """Cosine top-``k`` runs of every layer in ``layers`` on ``data``'s judged queries, and the encoding cost.

    With ``cache_folder``, document embeddings are saved chunk by chunk under a folder named by a digest of the
    model, the settings and the corpus, so that an interrupted sweep resumes and a second one is free.

    Raises:
        EarlyLayerError: an empty corpus, or a layer beyond the encoder.
    """
    if not data.corpus:
        raise EarlyLayerError(f"{data.name} has an empty corpus: there is nothing to embed")
    layers = sorted(set(layers))
    doc_ids = list(data.corpus)
    texts = [data.document_text(doc_id) for doc_id in doc_ids]
    max_length = max_length or encoder.max_length
    settings = {"layers": layers, "input_format": input_format, "pooling": pooling, "max_length": max_length}

    def encode(chunk: list[str]) -> dict[str, np.ndarray]:
        embeddings = encoder.encode(chunk, layers, input_format, pooling, batch_size, max_length)
        return {f"layer_{layer}": vectors for layer, vectors in embeddings.items()}

    folder = None
    if cache_folder is not None:
        from indexing.fingerprint import model_fingerprint

        key = cache_key(model_fingerprint(encoder.encoder), settings, doc_ids, texts)
        folder = Path(cache_folder) / f"{data.name}-{input_format}-{key}"
    documents = encode_in_chunks(texts, encode, folder, show_progress=show_progress)
    query_ids = list(data.queries)
    queries = encoder.encode(
        [data.queries[q] for q in query_ids], layers, input_format, pooling, batch_size, max_length
    )
    runs = {
        layer: exact_search(doc_ids, _unit(documents.arrays[f"layer_{layer}"]), query_ids, _unit(queries[layer]), k)
        for layer in layers
    }
    return runs, {**settings, **documents.cost()}
