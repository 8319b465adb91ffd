"""Building an index: encode a corpus once into a document store, plus its first stages (``mice index``).

Layout of an index folder::

    build.json     the settings the build started with (a resumed build must match them)
    states/        the document store (indexing.store), texts included
    bm25/          the BM25 first stage (bm25s)
    dense/         with an embedder: its unit-length document vectors (safetensors) and which embedder made them
    index.json     written last, when everything above is complete

The corpus is cut into shards of ``shard_size`` documents in file order; shard ``k`` holds documents
``k * shard_size ..``. Under ``accelerate launch`` process ``r`` of ``n`` encodes shards ``r, r + n, r + 2n, ...``
into the same folder, so one process or many write the same shards, byte for byte: a shard's content depends only
on its documents (each shard's batches are made from its own documents). Any other engine that runs "encode shard k"
tasks (Ray Data over shard numbers, a multi-node ``accelerate launch`` on a shared file system, a job array)
produces the same store; ``finalize_index`` then builds the first stages and ``index.json`` on one machine.

A shard is committed atomically, so an interrupted build resumes where it stopped: committed shards are kept, the
rest are encoded. Product quantisation is trained first, by the main process, on the states of a fixed sample of
documents, and committed with the store before any shard is encoded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .corpus import Corpus, load_corpus
from .encoding import DocumentEncoder
from .first_stage import BM25FirstStage, DenseFirstStage, embed_documents, embedder_description
from .store import DocumentStore, StoreError, _atomic_write_text, shard_name

logger = logging.getLogger(__name__)

INDEX_FORMAT = "mice-index/1"
INDEX_FILE = "index.json"
BUILD_FILE = "build.json"
STATES = "states"
BM25 = "bm25"
DENSE = "dense"
DENSE_PARTS = "dense-parts"
# The smallest form that kept nDCG@10 within 0.005 of float32 on debian-known-item (docs/results.md).
DEFAULT_COMPRESSION = "opq64"


class IndexBuildError(RuntimeError):
    """A build that cannot go on: another build's folder, missing shards, a model that is not MICE."""


@dataclass
class IndexConfig:
    """What ``mice index`` builds.

    Args:
        model: a MICE model folder (or Hub id).
        data: a BEIR folder or a ``corpus.jsonl`` file.
        output: the index folder (created; an interrupted build there is resumed).
        compression: ``float32``, ``float16``, ``int8``, ``pqM`` or ``opqM`` (``indexing.codecs``).
        embedder: a SentenceTransformer folder (or Hub id) for the dense first stage; none by default.
        shard_size: documents per shard (the unit of work, of resumption and of distribution).
        batch_size: documents per forward pass.
        codec_training_tokens: token states sampled to train product quantisation.
        device: torch device (default: accelerate's, i.e. this process's GPU, else the CPU).
        seed: seed of the product-quantisation sample and k-means.
        show_progress: progress bar on the main process.
    """

    model: str
    data: str
    output: str
    compression: str = DEFAULT_COMPRESSION
    embedder: str | None = None
    shard_size: int = 1024
    batch_size: int = 32
    codec_training_tokens: int = 131_072
    device: str | None = None
    seed: int = 0
    show_progress: bool = True


class _SingleProcess:
    process_index, num_processes, is_main_process = 0, 1, True
    device = None

    def wait_for_everyone(self) -> None:
        pass


def _process_state():
    """accelerate's view of the processes (one, unless started by ``accelerate launch`` or ``torchrun``).

    Without a GPU the processes run on the CPU and talk over gloo. (accelerate 1.x starts a single process for
    ``accelerate launch --cpu --num_processes 2``; ``--multi_gpu --num_processes 2`` on a machine without GPUs, or
    ``torchrun --nproc_per_node 2``, starts two.)
    """
    try:
        from accelerate import PartialState
    except ImportError:
        return _SingleProcess()
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return PartialState(cpu=cpu)


def load_mice(path: str, device: Any = None):
    """A MICE model (eval mode) and its tokenizer, refusing any other kind of model."""
    from transformers import AutoConfig, AutoTokenizer

    import modeling_mice  # noqa: F401  (registers MICE with the Auto classes)
    from modeling_mice import MiceForSequenceClassification

    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as error:
        raise IndexBuildError(f"could not read a model config at {path} ({error}); pass a MICE model folder") from error
    if model_type != "mice":
        raise IndexBuildError(f"{path} is a {model_type!r} model; an index needs a MICE model (model_type 'mice')")
    model = MiceForSequenceClassification.from_pretrained(path).eval()
    if device is not None:
        model = model.to(device)
    return model, AutoTokenizer.from_pretrained(path)


def _build_settings(config: IndexConfig, corpus: Corpus, encoder: DocumentEncoder, embedder_info) -> dict:
    return {
        "format": INDEX_FORMAT,
        "fingerprint": encoder.fingerprint["digest"],
        "compression": config.compression,
        "shard_size": config.shard_size,
        "corpus": {"documents": len(corpus), "digest": corpus.digest()},
        "embedder": None if embedder_info is None else embedder_info["fingerprint"],
        "codec_training_tokens": config.codec_training_tokens,
        "seed": config.seed,
    }


def _check_or_start(output: Path, settings: dict, fingerprint: dict) -> None:
    """Start a build in ``output``, or check that the build found there is this one (then it resumes)."""
    path = output / BUILD_FILE
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        differences = [key for key in settings if found.get(key) != settings[key]]
        if differences:
            details = ", ".join(f"{key}: {found.get(key)!r} there, {settings[key]!r} now" for key in differences)
            raise IndexBuildError(
                f"{output} holds a build with other settings ({details}); choose another --output, or delete it"
            )
        return
    if output.exists() and any(output.iterdir()):
        raise IndexBuildError(f"{output} exists and is not a MICE index folder; choose an empty or new --output")
    output.mkdir(parents=True, exist_ok=True)
    DocumentStore.create(output / STATES, fingerprint, settings["compression"], exist_ok=True)
    _atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def _codec_sample(corpus: Corpus, encoder: DocumentEncoder, tokens: int, seed: int) -> np.ndarray:
    """`(tokens, H)` states of documents drawn with ``seed`` (the same draw in every process and every run)."""
    order = np.random.default_rng(seed).permutation(len(corpus))
    chunks, total = [], 0
    for begin in range(0, len(order), 256):
        texts = [corpus.texts[i] for i in order[begin : begin + 256]]
        states = encoder.encode(texts)
        chunks += [s.numpy() for s in states]
        total += sum(len(s) for s in states)
        if total >= tokens:
            break
    sample = np.concatenate(chunks)
    if len(sample) > tokens:
        sample = sample[np.sort(np.random.default_rng(seed).choice(len(sample), tokens, replace=False))]
    return sample


def _dense_part(output: Path, number: int) -> Path:
    return output / DENSE_PARTS / f"part-{number:05d}.safetensors"


def _write_dense_part(output: Path, number: int, vectors: np.ndarray) -> None:
    from safetensors.numpy import save_file

    target = _dense_part(output, number)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save_file({"vectors": vectors}, temporary)
    os.replace(temporary, target)


def encode_shards(
    config: IndexConfig,
    corpus: Corpus,
    store: DocumentStore,
    encoder: DocumentEncoder,
    shards: list[int],
    embedder: Any = None,
    show_progress: bool = False,
) -> int:
    """Encode and commit the shards numbered ``shards`` that are not committed yet; returns how many were encoded.

    This is the unit of work any engine can run: shard ``k`` depends only on the corpus, the model and the codec.
    """
    output = Path(config.output)
    encoded = 0
    for number in tqdm(shards, desc="encoding shards", unit="shard", disable=not show_progress):
        begin = number * config.shard_size
        ids = corpus.ids[begin : begin + config.shard_size]
        texts = corpus.texts[begin : begin + config.shard_size]
        done = store.has_shard(number) and store.shard_document_ids(number) == ids
        if not done:
            store.write_shard(ids, encoder.encode(texts), texts, number=number, keep_texts=True)
            encoded += 1
        if embedder is not None and not _dense_part(output, number).is_file():
            _write_dense_part(output, number, embed_documents(embedder, texts, config.batch_size))
    return encoded


def build_index(config: IndexConfig) -> dict[str, Any] | None:
    """Build (or resume) the index ``config.output``; returns ``index.json``'s content (``None`` on the processes
    other than the main one under ``accelerate launch``).

    Raises:
        BeirFormatError: the corpus is malformed or repeats a document id. IndexBuildError: ``output`` holds another
        build, or the model is not MICE. FingerprintMismatchError / StoreError: a shard is foreign or damaged.
    """
    started = time.perf_counter()
    state = _process_state()
    if config.shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {config.shard_size}")
    corpus = load_corpus(config.data)
    output = Path(config.output)
    finished = output / INDEX_FILE
    model, tokenizer = load_mice(config.model, config.device or state.device)
    encoder = DocumentEncoder(model, tokenizer, config.batch_size)
    embedder, embedder_info = None, None
    if config.embedder:
        from sentence_transformers import SentenceTransformer

        embedder = SentenceTransformer(config.embedder, device=str(model.device))
        embedder_info = embedder_description(embedder, config.embedder)
    settings = _build_settings(config, corpus, encoder, embedder_info)
    if state.is_main_process:
        _check_or_start(output, settings, encoder.fingerprint)
    state.wait_for_everyone()
    if finished.is_file():
        return json.loads(finished.read_text(encoding="utf-8")) if state.is_main_process else None
    store = DocumentStore.open(output / STATES, encoder.fingerprint)

    codec_seconds = 0.0
    if not store.codec.trained:
        if state.is_main_process:
            began = time.perf_counter()
            sample = _codec_sample(corpus, encoder, config.codec_training_tokens, config.seed)
            store.train_codec(sample, seed=config.seed)
            codec_seconds = time.perf_counter() - began
        state.wait_for_everyone()
        store.reload_codec()

    shard_count = -(-len(corpus) // config.shard_size)
    mine = list(range(state.process_index, shard_count, state.num_processes))
    began = time.perf_counter()
    encoded = encode_shards(
        config, corpus, store, encoder, mine, embedder, show_progress=config.show_progress and state.is_main_process
    )
    encoding_seconds = time.perf_counter() - began
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return finalize_index(
        config,
        corpus,
        encoder,
        embedder_info,
        {
            "seconds": None,  # set below, once the first stages are built too
            "processes": state.num_processes,
            "device": str(model.device),
            "shards_encoded_by_this_run": encoded if state.num_processes == 1 else None,
            "codec_training_seconds": round(codec_seconds, 3),
            "encoding_seconds": round(encoding_seconds, 3),
        },
        started,
    )


def finalize_index(
    config: IndexConfig,
    corpus: Corpus,
    encoder: DocumentEncoder,
    embedder_info: dict | None,
    build: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Check that every shard is committed, build the first stages and write ``index.json`` (main process only)."""
    output = Path(config.output)
    store = DocumentStore.open(output / STATES, encoder.fingerprint)
    shard_count = -(-len(corpus) // config.shard_size)
    missing = [shard_name(k) for k in range(shard_count) if not store.has_shard(k)]
    if missing:
        raise IndexBuildError(
            f"{len(missing)} of {shard_count} shards are missing from {store.folder} (e.g. {missing[:3]}); run the "
            "same command again to encode them"
        )
    if store.document_ids != corpus.ids:
        raise StoreError(f"{store.folder} does not hold the corpus's documents in order; delete {output} and rebuild")
    began = time.perf_counter()
    bm25 = BM25FirstStage.build(corpus.ids, corpus.texts, output / BM25)
    build["bm25_seconds"] = round(time.perf_counter() - began, 3)
    first_stages: dict[str, Any] = {"bm25": bm25.describe()}
    if embedder_info is not None:
        from safetensors.numpy import load_file

        parts = [load_file(_dense_part(output, k))["vectors"] for k in range(shard_count)]
        DenseFirstStage.save(output / DENSE, np.concatenate(parts), corpus.ids, embedder_info)
        first_stages["dense"] = embedder_info
    build["seconds"] = round(time.perf_counter() - started, 3)
    build["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tokens = store.token_count
    info = {
        "format": INDEX_FORMAT,
        "model": str(config.model),
        "fingerprint": encoder.fingerprint,
        "compression": store.codec.name,
        "bytes_per_token": store.codec.bytes_per_token(),
        "float32_bytes_per_token": 4 * store.codec.hidden_size,
        "documents": len(store),
        "tokens": tokens,
        "shards": shard_count,
        "store_bytes": store.nbytes(),
        "corpus": {"source": str(corpus.source), "digest": corpus.digest()},
        "first_stages": first_stages,
        "config": asdict(config),
        "build": build,
    }
    _atomic_write_text(output / INDEX_FILE, json.dumps(info, indent=2) + "\n")
    for part in sorted((output / DENSE_PARTS).glob("part-*.safetensors")):
        part.unlink()
    if (output / DENSE_PARTS).is_dir():
        (output / DENSE_PARTS).rmdir()
    return info
