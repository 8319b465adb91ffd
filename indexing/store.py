"""The document store: MICE document states by document id, in safetensors shards, read by memory-mapping.

Layout of a store folder::

    store.json                 format, fingerprint (model and tokenizer settings), compression, hidden size
    codec.safetensors          the trained codec's parameters (product quantisation only)
    shard-00000.safetensors    documents laid end to end, one shard per committed batch of work

A shard holds the codec's per-token arrays (e.g. ``states (T, H)``, or ``codes (T, M)``), ``offsets (N + 1)``
(document i is tokens ``offsets[i]:offsets[i + 1]``), ``checksums (N)`` (CRC-32 of each document's bytes), and
optionally the texts (``text_bytes``, ``text_offsets``); its metadata (one JSON entry behind its CRC-32) names the
format, the fingerprint digest, the compression, the document ids and digests of the texts they were encoded from.

Guarantees:

* **Atomic commits.** A shard is written to a temporary file and linked into place only when complete: a reader
  never sees half a shard, and an interrupted build resumes from the shards already committed.
* **Refusal of foreign states.** A store opened for a model whose fingerprint differs is refused with the settings
  that differ; so is a shard copied in from another store.
* **Checked reads.** Opening a store reads every shard's header (a truncated or garbled shard is reported with its
  path); every document read is checked against its CRC-32, so a flipped byte is an error, never a wrong score.
* **Memory-mapped.** Only the header of each shard is read on open; ``get`` reads the rows of the documents asked for.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ranking_data.work_folders import atomic_write_text

from .codecs import CodecError, StateCodec, make_codec
from .fingerprint import describe_mismatch

if TYPE_CHECKING:
    from modeling_mice import MiceDocumentStates

    from .encoding import DocumentEncoder

STORE_FORMAT = "mice-document-store/1"
MANIFEST = "store.json"
CODEC_FILE = "codec.safetensors"
SHARD_GLOB = "shard-*.safetensors"
METADATA_KEY = "mice_document_store"
MAX_OPEN_SHARDS = 128  # each open shard holds a memory map and a file descriptor


class StoreError(RuntimeError):
    """A store or shard that cannot be used: missing, truncated, corrupt, or from another model."""


class FingerprintMismatchError(StoreError):
    """States encoded by another model or with other tokenizer settings."""


def text_digest(text: str) -> str:
    """Short digest of a document text, stored next to its states to detect a changed collection."""
    return zlib.crc32(text.encode("utf-8")).to_bytes(4, "big").hex() + f"{len(text):x}"


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def _commit(temporary: Path, target: Path, overwrite: bool) -> bool:
    """Move a complete file into place; without ``overwrite``, only if ``target`` does not exist yet."""
    if overwrite:
        os.replace(temporary, target)
        return True
    try:
        os.link(temporary, target)  # atomic and never clobbers: a concurrent writer's shard stays intact
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class _Shard:
    path: Path
    document_ids: list[str]
    text_digests: list[str]
    offsets: np.ndarray
    checksums: np.ndarray
    has_texts: bool

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])


class DocumentStore:
    """MICE document states of one model, by document id (see the module docstring for the format).

    Create one with :meth:`create`, :meth:`open`, :meth:`open_or_create` or :meth:`temporary`. ``get(doc_ids)``
    returns a right-padded ``MiceDocumentStates`` in float32; ``add`` and ``write_shard`` commit new documents;
    ``encode_missing`` encodes (with a :class:`~indexing.encoding.DocumentEncoder`) whatever is not stored yet.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], codec: StateCodec):
        self.folder = folder
        self.manifest = manifest
        self.codec = codec
        self.fingerprint: dict[str, Any] = manifest["fingerprint"]
        self._shards: dict[str, _Shard] = {}
        self._locations: dict[str, tuple[str, int]] = {}
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._finalizer = None
        self.refresh()

    # -- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: str | Path, fingerprint: dict[str, Any], compression: str = "float32", exist_ok: bool = False
    ) -> DocumentStore:
        """A new, empty store in ``folder`` for states with this ``fingerprint``, stored as ``compression``."""
        folder = Path(folder)
        codec = make_codec(compression, int(fingerprint["hidden_size"]))
        manifest = {
            "format": STORE_FORMAT,
            "fingerprint": fingerprint,
            "compression": codec.name,
            "hidden_size": int(fingerprint["hidden_size"]),
            "bytes_per_token": codec.bytes_per_token(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if (folder / MANIFEST).exists() and not exist_ok:
            raise StoreError(f"{folder} already holds a document store ({MANIFEST}); open it instead")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        return cls(folder, manifest, codec)

    @classmethod
    def open(cls, folder: str | Path, fingerprint: dict[str, Any] | None = None) -> DocumentStore:
        """Open the store in ``folder``, refusing it when ``fingerprint`` (of the model that will read it) differs."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise StoreError(f"{folder} is not a MICE document store: it has no {MANIFEST}")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise StoreError(f"{path} is not valid JSON ({error.msg}); the store is damaged: rebuild it") from error
        if manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{path} has format {manifest.get('format')!r}, this version reads {STORE_FORMAT!r}")
        if fingerprint is not None:
            check_fingerprint(manifest["fingerprint"], fingerprint, folder)
        try:
            codec = make_codec(manifest["compression"], int(manifest["hidden_size"]))
        except (CodecError, KeyError) as error:
            raise StoreError(f"{path} names no usable compression ({error})") from error
        if codec.needs_training and (folder / CODEC_FILE).is_file():
            codec.load_parameters(_read_arrays(folder / CODEC_FILE))
        return cls(folder, manifest, codec)

    @classmethod
    def open_or_create(
        cls, folder: str | Path, fingerprint: dict[str, Any], compression: str = "float32"
    ) -> DocumentStore:
        """Open the store in ``folder`` (same fingerprint required), or create it there."""
        if (Path(folder) / MANIFEST).is_file():
            store = cls.open(folder, fingerprint)
            if store.codec.name != make_codec(compression, int(fingerprint["hidden_size"])).name:
                raise StoreError(
                    f"{folder} stores states as {store.codec.name}, not {compression}: use another folder for "
                    f"{compression}, or the store's own compression"
                )
            return store
        return cls.create(folder, fingerprint, compression)

    @classmethod
    def temporary(cls, fingerprint: dict[str, Any], compression: str = "float32") -> DocumentStore:
        """A store in a new temporary folder, deleted with the store object (or at exit)."""
        folder = Path(tempfile.mkdtemp(prefix="mice-states-"))
        store = cls.create(folder, fingerprint, compression, exist_ok=True)
        store._finalizer = weakref.finalize(store, shutil.rmtree, folder, True)
        return store

    @classmethod
    def at(
        cls,
        folder: str | Path | None,
        fingerprint: dict[str, Any],
        compression: str = "float32",
        collection: str | None = None,
    ) -> DocumentStore:
        """The store a user-given folder names, for the model with ``fingerprint``.

        ``None``: a temporary store. A store folder, or an index folder (``mice index``) holding one in ``states/``:
        that store (its fingerprint must match). Any other folder: a cache of stores, one per model, in
        ``folder/<fingerprint digest>`` (created on first use), or ``folder/<collection>/<fingerprint digest>`` when
        a ``collection`` is named: document ids repeat across collections (cranfield's '928' is not cisi's).
        """
        if folder is None:
            return cls.temporary(fingerprint, compression)
        folder = Path(folder).expanduser()
        for candidate in (folder, folder / "states"):
            if (candidate / MANIFEST).is_file():
                return cls.open(candidate, fingerprint)
        cache = folder if collection is None else folder / collection
        return cls.open_or_create(cache / fingerprint["digest"], fingerprint, compression)

    @property
    def is_temporary(self) -> bool:
        return self._finalizer is not None

    def close(self) -> None:
        """Release the memory maps (and delete the folder of a temporary store)."""
        self._handles.clear()
        if self._finalizer is not None:
            self._finalizer()

    # -- shards --------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the headers of shards committed since the store was opened (by this or another process)."""
        for path in sorted(self.folder.glob(SHARD_GLOB)):
            if path.name not in self._shards:
                self._register(self._read_header(path))

    def _fail(self, path: Path, problem: str) -> StoreError:
        return StoreError(
            f"{path} {problem}. Delete that shard and run the build again (its documents are re-encoded), "
            "or rebuild the store."
        )

    def _read_header(self, path: Path) -> _Shard:
        try:
            with safe_open(path, framework="numpy") as handle:
                metadata = handle.metadata() or {}
                shapes = {name: handle.get_slice(name).get_shape() for name in handle.keys()}
                offsets = handle.get_tensor("offsets") if "offsets" in shapes else None
                checksums = handle.get_tensor("checksums") if "checksums" in shapes else None
        except (SafetensorError, OSError, ValueError) as error:
            raise self._fail(path, f"is truncated or not a readable safetensors shard ({error})") from error
        header = metadata.get(METADATA_KEY, "")
        checksum, _, payload = header.partition(":")
        if not header:
            raise self._fail(path, f"is not a {STORE_FORMAT} shard")
        if f"{zlib.crc32(payload.encode('utf-8')):08x}" != checksum:
            raise self._fail(path, "has a damaged header (CRC-32 mismatch of its document ids)")
        try:
            header = json.loads(payload)
            ids, digests = header["document_ids"], header["text_digests"]
        except (KeyError, json.JSONDecodeError) as error:
            raise self._fail(path, "has unreadable document ids in its metadata") from error
        if header.get("format") != STORE_FORMAT:
            raise self._fail(path, f"is not a {STORE_FORMAT} shard")
        if header.get("fingerprint") != self.fingerprint["digest"]:
            raise self._fail(
                path,
                f"holds states of another model (fingerprint {header.get('fingerprint')!r}, this store's is "
                f"{self.fingerprint['digest']!r})",
            )
        if header.get("compression") != self.codec.name:
            raise self._fail(path, f"is compressed as {header.get('compression')!r}, the store as {self.codec.name!r}")
        arrays = set(self.codec.encode(np.zeros((1, self.codec.hidden_size), np.float32)).keys())
        expected = arrays | {"offsets", "checksums"}
        has_texts = "text_bytes" in shapes
        if has_texts:
            expected |= {"text_bytes", "text_offsets"}
        tokens = None if offsets is None or len(offsets) == 0 else int(offsets[-1])
        if (
            set(shapes) != expected
            or len(ids) != len(digests)
            or tuple(shapes["offsets"]) != (len(ids) + 1,)
            or tuple(shapes["checksums"]) != (len(ids),)
            or any(shapes[name][0] != tokens for name in arrays)
            or bool((np.diff(offsets) < 0).any())
        ):
            raise self._fail(path, "has inconsistent arrays (ids, offsets and token rows do not agree)")
        return _Shard(path, ids, digests, offsets.astype(np.int64), checksums, has_texts)

    def _register(self, shard: _Shard) -> None:
        self._shards[shard.path.name] = shard
        for row, doc_id in enumerate(shard.document_ids):
            self._locations.setdefault(doc_id, (shard.path.name, row))

    def _handle(self, name: str):
        handle = self._handles.get(name)
        if handle is None:
            path = self._shards[name].path
            try:
                handle = safe_open(path, framework="numpy")
            except (SafetensorError, OSError) as error:
                raise self._fail(path, f"could not be opened ({error})") from error
            self._handles[name] = handle
            if len(self._handles) > MAX_OPEN_SHARDS:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(name)
        return handle

    def shard_names(self) -> list[str]:
        return sorted(self._shards)

    def has_shard(self, number: int) -> bool:
        return shard_name(number) in self._shards

    def shard_document_ids(self, number: int) -> list[str]:
        return list(self._shards[shard_name(number)].document_ids)

    # -- the codec -----------------------------------------------------------------------------------------------
    def train_codec(self, sample: np.ndarray, seed: int = 0) -> None:
        """Train the codec (product quantisation) on a `(T, H)` sample and commit its parameters."""
        self.codec.train(sample, seed=seed)
        self.save_codec()

    def save_codec(self) -> None:
        temporary = self.folder / f".{CODEC_FILE}.{os.getpid()}.tmp"
        save_file({k: np.ascontiguousarray(v) for k, v in self.codec.parameters().items()}, temporary)
        os.replace(temporary, self.folder / CODEC_FILE)

    def reload_codec(self) -> None:
        """Load the codec parameters another process committed."""
        if self.codec.needs_training:
            path = self.folder / CODEC_FILE
            if not path.is_file():
                raise StoreError(f"{path} is missing: the {self.codec.name} codec of this store was never trained")
            self.codec.load_parameters(_read_arrays(path))

    # -- writing -------------------------------------------------------------------------------------------------
    def write_shard(
        self,
        document_ids: Sequence[str],
        states: Sequence[torch.Tensor | np.ndarray],
        texts: Sequence[str],
        number: int | None = None,
        keep_texts: bool = False,
    ) -> str:
        """Encode and commit one shard: ``states[i]`` is the `(Ld_i, H)` float32 states of ``document_ids[i]``.

        ``number`` names the shard (``shard-NNNNN``; builds number them by position in the corpus, and a rerun
        replaces a shard of the same number); without it the next free number is taken. ``keep_texts`` stores the
        texts too (an index returns them with its results). Returns the shard's file name.
        """
        if not (len(document_ids) == len(states) == len(texts)) or not document_ids:
            raise ValueError("write_shard needs the same positive number of ids, states and texts")
        if not self.codec.trained:
            raise StoreError(f"the {self.codec.name} codec of {self.folder} is not trained yet (train_codec)")
        matrices = [np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s, np.float32) for s in states]
        if any(m.ndim != 2 or m.shape[1] != self.codec.hidden_size or len(m) == 0 for m in matrices):
            raise ValueError(f"every document's states must be (tokens >= 1, {self.codec.hidden_size})")
        lengths = np.array([len(m) for m in matrices], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tensors = self.codec.encode(np.concatenate(matrices))
        encoded_texts = [text.encode("utf-8") for text in texts]
        if keep_texts:
            text_lengths = [len(text) for text in encoded_texts]
            tensors["text_bytes"] = np.frombuffer(b"".join(encoded_texts) or b"\0", dtype=np.uint8)[: sum(text_lengths)]
            tensors["text_offsets"] = np.concatenate([[0], np.cumsum(text_lengths)]).astype(np.int64)
        checksums = np.array(
            [
                _document_crc(
                    {n: a[offsets[i] : offsets[i + 1]] for n, a in tensors.items() if not n.startswith("text_")},
                    encoded_texts[i] if keep_texts else b"",
                )
                for i in range(len(matrices))
            ],
            dtype=np.uint32,
        )
        tensors |= {"offsets": offsets, "checksums": checksums}
        payload = json.dumps(
            {
                "format": STORE_FORMAT,
                "fingerprint": self.fingerprint["digest"],
                "compression": self.codec.name,
                "document_ids": list(document_ids),
                "text_digests": [text_digest(text) for text in texts],
            },
            sort_keys=True,
        )
        # One metadata entry, so that the header's bytes do not depend on a hash map's order: the same documents
        # always give the same file.
        metadata = {METADATA_KEY: f"{zlib.crc32(payload.encode('utf-8')):08x}:{payload}"}
        temporary = self.folder / f".shard.{os.getpid()}.{id(tensors)}.tmp"
        save_file(tensors, temporary, metadata=metadata)
        if number is not None:
            name = shard_name(number)
            self._handles.pop(name, None)
            _commit(temporary, self.folder / name, overwrite=True)
        else:
            number = len(self._shards)
            while True:
                # Next free number; another process may take one concurrently, so try until a link succeeds.
                while shard_name(number) in self._shards or (self.folder / shard_name(number)).exists():
                    number += 1
                name = shard_name(number)
                if _commit(temporary, self.folder / name, overwrite=False):
                    break
                save_file(tensors, temporary, metadata=metadata)
        self._shards.pop(name, None)
        self._register(self._read_header(self.folder / name))
        return name

    def add(self, document_ids: Sequence[str], states: Sequence[torch.Tensor], texts: Sequence[str]) -> str | None:
        """Commit documents not stored yet as a new shard (an untrained codec is trained on them first)."""
        keep = [i for i, doc_id in enumerate(document_ids) if doc_id not in self._locations]
        if not keep:
            return None
        if not self.codec.trained:
            self.train_codec(np.concatenate([np.asarray(states[i].cpu(), np.float32) for i in keep]))
        return self.write_shard([document_ids[i] for i in keep], [states[i] for i in keep], [texts[i] for i in keep])

    def encode_missing(self, documents: Mapping[str, str], encoder: DocumentEncoder) -> list[str]:
        """Encode and commit the documents ``{doc_id: text}`` not stored yet; returns their ids.

        A stored document whose text differs from the one given is an error: the collection changed since its
        states were stored.
        """
        self.check_texts(documents)
        missing = [doc_id for doc_id in dict.fromkeys(documents) if doc_id not in self._locations]
        if missing:
            texts = [documents[doc_id] for doc_id in missing]
            self.add(missing, encoder.encode(texts), texts)
        return missing

    def check_texts(self, documents: Mapping[str, str]) -> None:
        """Raise if a stored document was encoded from another text than ``documents`` gives."""
        for doc_id, text in documents.items():
            location = self._locations.get(doc_id)
            if location is not None:
                shard = self._shards[location[0]]
                if shard.text_digests[location[1]] != text_digest(text):
                    raise self._fail(
                        shard.path,
                        f"holds document {doc_id!r} encoded from a different text (the collection has changed)",
                    )

    # -- reading -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._locations)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._locations

    @property
    def document_ids(self) -> list[str]:
        """Every stored id, shard by shard in shard order."""
        return list(self._locations)

    @property
    def token_count(self) -> int:
        return sum(shard.tokens for shard in self._shards.values())

    def nbytes(self) -> int:
        """Bytes on disk: shards and codec parameters."""
        files = [shard.path for shard in self._shards.values()] + [self.folder / CODEC_FILE]
        return sum(path.stat().st_size for path in files if path.exists())

    def _locate(self, doc_ids: Sequence[str]) -> list[tuple[str, int]]:
        missing = [doc_id for doc_id in doc_ids if doc_id not in self._locations]
        if missing:
            raise KeyError(f"{len(missing)} document id(s) are not in the store {self.folder}, e.g. {missing[:5]}")
        return [self._locations[doc_id] for doc_id in doc_ids]

    def _rows(self, name: str, row: int) -> tuple[dict[str, np.ndarray], bytes]:
        shard = self._shards[name]
        handle = self._handle(name)
        begin, end = int(shard.offsets[row]), int(shard.offsets[row + 1])
        try:
            arrays = {
                key: handle.get_slice(key)[begin:end]
                for key in handle.keys()
                if key not in ("offsets", "checksums", "text_bytes", "text_offsets")
            }
            text = b""
            if shard.has_texts:
                text_offsets = handle.get_slice("text_offsets")[row : row + 2]
                text = handle.get_slice("text_bytes")[int(text_offsets[0]) : int(text_offsets[1])].tobytes()
        except (SafetensorError, OSError, ValueError, IndexError) as error:
            raise self._fail(shard.path, f"could not be read ({error})") from error
        if _document_crc(arrays, text) != int(shard.checksums[row]):
            raise self._fail(
                shard.path,
                f"is corrupt: document {shard.document_ids[row]!r} does not match its CRC-32 checksum",
            )
        return arrays, text

    def get(self, doc_ids: Sequence[str], device: torch.device | str | None = None) -> MiceDocumentStates:
        """The decoded float32 states of ``doc_ids``, in that order, right-padded to the longest."""
        from modeling_mice import MiceDocumentStates

        if not doc_ids:
            raise ValueError("no document ids were given")
        parts = [self._rows(name, row)[0] for name, row in self._locate(doc_ids)]
        lengths = torch.tensor([len(next(iter(p.values()))) for p in parts])
        joined = {key: torch.from_numpy(np.concatenate([p[key] for p in parts])) for key in parts[0]}
        decoded = self.codec.decode(joined)
        valid = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
        hidden = decoded.new_zeros(len(parts), valid.shape[1], decoded.shape[1])
        hidden[valid] = decoded
        states = MiceDocumentStates(hidden, valid.long())
        return states.to(device) if device is not None else states

    def texts(self, doc_ids: Sequence[str]) -> list[str]:
        """The stored texts of ``doc_ids`` (stores built by ``mice index`` keep them)."""
        texts = []
        for name, row in self._locate(doc_ids):
            if not self._shards[name].has_texts:
                raise StoreError(f"{self._shards[name].path} does not keep its documents' texts")
            texts.append(self._rows(name, row)[1].decode("utf-8"))
        return texts

    def token_counts(self, doc_ids: Sequence[str]) -> list[int]:
        return [int(np.diff(self._shards[name].offsets[row : row + 2])[0]) for name, row in self._locate(doc_ids)]

    def iter_shards(self) -> Iterator[tuple[str, list[str], list[torch.Tensor], list[str] | None]]:
        """Every shard decoded: ``(name, ids, [(Ld, H) float32 states], texts or None)``."""
        for name in self.shard_names():
            shard = self._shards[name]
            rows = [self._rows(name, row) for row in range(len(shard.document_ids))]
            lengths = [len(next(iter(arrays.values()))) for arrays, _ in rows]
            joined = {key: torch.from_numpy(np.concatenate([a[key] for a, _ in rows])) for key in rows[0][0]}
            states = list(torch.split(self.codec.decode(joined), lengths))
            texts = [text.decode("utf-8") for _, text in rows] if shard.has_texts else None
            yield name, list(shard.document_ids), states, texts

    def verify(self) -> int:
        """Read and check every document of every shard; returns the number of documents checked."""
        checked = 0
        for name in self.shard_names():
            for row in range(len(self._shards[name].document_ids)):
                self._rows(name, row)
                checked += 1
        return checked


def check_fingerprint(stored: dict[str, Any], current: dict[str, Any], where: Path | str) -> None:
    """Refuse states whose fingerprint differs from the reading model's, naming the settings that differ."""
    if stored.get("digest") != current.get("digest"):
        differences = describe_mismatch(stored, current) or "the fingerprint digests differ"
        raise FingerprintMismatchError(
            f"{where} holds states of another model or other tokenizer settings ({differences}); they cannot be "
            "reused: rebuild it with this model, or load the model it was built with"
        )


def _document_crc(arrays: dict[str, np.ndarray], text: bytes) -> int:
    crc = 0
    for key in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[key]).tobytes(), crc)
    return zlib.crc32(text, crc)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(path, framework="numpy") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise StoreError(
            f"{path} is truncated or not a readable safetensors file ({error}); rebuild the store"
        ) from error
