"""An on-disk cache of MICE document states (safetensors), so documents are encoded once per model.

Layout: ``<folder>/<model fingerprint>/shard-NNNNN.safetensors``. Each shard holds the documents encoded in one
batch of work, trimmed to their real length and laid end to end: ``hidden_states (total_tokens, H)`` plus
``offsets (N + 1,)``; its metadata names the format, the model fingerprint and, per document, the id and a digest of
the text it was encoded from. A document whose text has changed since it was cached is an error, never a silent stale
state.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "mice-document-states/1"


class DocumentCacheError(RuntimeError):
    """A cache file that cannot be read or does not belong to the model or documents asked for."""


def text_digest(text: str) -> str:
    """Short digest of a document text, stored next to its states to detect a changed collection."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Digest of a model's configuration and weights: the cache key of everything it encodes."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if hasattr(config, "to_json_string"):
        digest.update(config.to_json_string(use_diff=False).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


class DocumentStateCache:
    """Per-document MICE states of one model, persisted as safetensors shards.

    Example:
        >>> cache = DocumentStateCache("~/.cache/mice-states", model_fingerprint(model))
        >>> found = cache.get({"d1": "some text"})  # {doc_id: (Ld, H) tensor} for the cached ones
        >>> cache.put({"d2": states_d2}, {"d2": "other text"})
    """

    def __init__(self, folder: str | Path, fingerprint: str):
        self.fingerprint = fingerprint
        self.folder = Path(folder).expanduser() / fingerprint
        self._index: dict[str, tuple[Path, int, str]] = {}
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            self._index_shard(shard)

    def _fail(self, shard: Path, problem: str) -> DocumentCacheError:
        return DocumentCacheError(
            f"document-state cache file {shard} {problem}. Delete that file (or the folder {self.folder}) and run "
            "again: the documents will be re-encoded."
        )

    def _index_shard(self, shard: Path) -> None:
        try:
            with safe_open(shard, framework="pt") as handle:
                metadata = handle.metadata() or {}
                keys = set(handle.keys())
        except (SafetensorError, OSError, ValueError) as error:
            raise self._fail(shard, f"is not a readable safetensors file ({error})") from error
        if metadata.get("format") != FORMAT or keys != {"hidden_states", "offsets"}:
            raise self._fail(shard, f"is not a {FORMAT} shard (metadata format {metadata.get('format')!r})")
        if metadata.get("model") != self.fingerprint:
            raise self._fail(shard, f"holds states of model {metadata.get('model')!r}, not {self.fingerprint!r}")
        try:
            ids, digests = json.loads(metadata["document_ids"]), json.loads(metadata["text_digests"])
        except (KeyError, json.JSONDecodeError) as error:
            raise self._fail(shard, "has unreadable document ids in its metadata") from error
        for row, (doc_id, digest) in enumerate(zip(ids, digests, strict=True)):
            self._index[doc_id] = (shard, row, digest)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._index

    def get(self, documents: dict[str, str]) -> dict[str, torch.Tensor]:
        """States ``(Ld, H)`` of the documents ``{doc_id: text}`` that are cached; the others are left out."""
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for doc_id, text in documents.items():
            if doc_id not in self._index:
                continue
            shard, row, digest = self._index[doc_id]
            if digest != text_digest(text):
                raise self._fail(
                    shard, f"holds document {doc_id!r} encoded from a different text (the collection has changed)"
                )
            by_shard.setdefault(shard, []).append((doc_id, row))
        found: dict[str, torch.Tensor] = {}
        for shard, rows in by_shard.items():
            try:
                with safe_open(shard, framework="pt") as handle:
                    offsets = handle.get_tensor("offsets")
                    hidden = handle.get_slice("hidden_states")
                    for doc_id, row in rows:
                        found[doc_id] = hidden[int(offsets[row]) : int(offsets[row + 1])]
            except (SafetensorError, OSError, IndexError, ValueError) as error:
                raise self._fail(shard, f"could not be read ({error})") from error
        return found

    def put(self, states: dict[str, torch.Tensor], documents: dict[str, str]) -> Path | None:
        """Write the states ``{doc_id: (Ld, H) tensor}`` of documents ``{doc_id: text}`` as a new shard."""
        states = {doc_id: tensor for doc_id, tensor in states.items() if doc_id not in self._index}
        if not states:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        ids = list(states)
        lengths = torch.tensor([0] + [states[doc_id].shape[0] for doc_id in ids])
        shard = self.folder / f"shard-{len(list(self.folder.glob('shard-*.safetensors'))):05d}.safetensors"
        metadata = {
            "format": FORMAT,
            "model": self.fingerprint,
            "document_ids": json.dumps(ids),
            "text_digests": json.dumps([text_digest(documents[doc_id]) for doc_id in ids]),
        }
        tensors = {
            "hidden_states": torch.cat([states[doc_id] for doc_id in ids]).contiguous(),
            "offsets": torch.cumsum(lengths, 0),
        }
        temporary = shard.with_suffix(".tmp")
        save_file(tensors, temporary, metadata=metadata)
        temporary.rename(shard)  # an interrupted write never leaves a half shard behind
        self._index_shard(shard)
        return shard
