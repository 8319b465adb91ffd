"""Index once, search many times: a persistent, compressed store of MICE document states, and search over it.

Modules:

- ``store``: ``DocumentStore``, MICE document states by document id in safetensors shards (atomic commits,
  memory-mapped reads, checksums, fingerprint checks); the one store that training, evaluation, teachers and the
  Space use;
- ``codecs``: how states are stored (``float32``, ``float16``, ``int8``, ``pqM``/``opqM`` product quantisation);
- ``fingerprint``: what a stored state depends on (``document_state_fingerprint``), ``model_fingerprint``;
- ``encoding``: ``DocumentEncoder``, MICE's independent layers over texts in length-sorted batches;
- ``build``: ``IndexConfig``, ``build_index`` (``mice index``; resumable, split over ``accelerate launch`` processes);
- ``first_stage``: BM25 (bm25s), dense (SentenceTransformer + faiss) and hybrid candidates;
- ``mice_index``: ``MiceIndex.load(path).search(query, k)`` (``mice search``).

``DocumentStore``, ``DocumentEncoder`` and ``MiceIndex`` are importable from here; the heavier modules (bm25s,
faiss, sentence-transformers) load only when used.
"""

from .encoding import DocumentEncoder
from .store import DocumentStore, FingerprintMismatchError, StoreError


def __getattr__(name: str):
    if name in ("MiceIndex", "SearchHit", "EmptyIndexError"):
        from . import mice_index

        return getattr(mice_index, name)
    if name in ("IndexConfig", "build_index"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'indexing' has no attribute {name!r}")


__all__ = [
    "DocumentEncoder",
    "DocumentStore",
    "EmptyIndexError",
    "FingerprintMismatchError",
    "IndexConfig",
    "MiceIndex",
    "SearchHit",
    "StoreError",
    "build_index",
]
