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
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ranking_data.work_folders import atomic_write_text

from .corpus import Corpus, load_corpus
from .encoding import DocumentEncoder
from .first_stage import BM25FirstStage, DenseFirstStage, embed_documents, embedder_description
from .store import DocumentStore, StoreError, shard_name

INDEX_FORMAT = "mice-index/1"
INDEX_FILE = "index.json"
BUILD_FILE = "build.json"
STATES = "states"
BM25 = "bm25"
DENSE = "dense"
DENSE_PARTS = "dense-parts"
# int8 kept nDCG@10 within 0.005 of float32 on debian-known-item (+0.0017) at a quarter of its bytes, for any hidden
# size and with no codec to train; opq64 did not (-0.0063). The one smaller form within the bound there, opq192
# (-0.0026), needs a hidden size it divides and a trained codec, and sits within the spread of the PQ forms'
# measurements (opq96 -0.012 against opq64 -0.0063): docs/results.md, "Index once, search many times".
DEFAULT_COMPRESSION = "int8"


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
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


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


@dataclass
class BuildContext:
    """What every step of a build reads: the settings, the corpus, the model's encoder and the optional embedder.

    Each worker of a distributed engine loads its own (``BuildContext.load(config)``), on its own device.
    """

    config: IndexConfig
    corpus: Corpus
    encoder: DocumentEncoder
    embedder: Any = None
    embedder_info: dict[str, Any] | None = None

    @classmethod
    def load(cls, config: IndexConfig, device: Any = None) -> BuildContext:
        if config.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {config.shard_size}")
        corpus = load_corpus(config.data)
        model, tokenizer = load_mice(config.model, device or config.device)
        context = cls(config, corpus, DocumentEncoder(model, tokenizer, config.batch_size))
        if config.embedder:
            from sentence_transformers import SentenceTransformer

            context.embedder = SentenceTransformer(config.embedder, device=str(model.device))
            context.embedder_info = embedder_description(context.embedder, config.embedder)
        return context

    @property
    def output(self) -> Path:
        return Path(self.config.output)

    @property
    def shard_count(self) -> int:
        return -(-len(self.corpus) // self.config.shard_size)

    def settings(self) -> dict[str, Any]:
        """What a resumed build must share with the one it resumes."""
        config = self.config
        return {
            "format": INDEX_FORMAT,
            "fingerprint": self.encoder.fingerprint["digest"],
            "compression": config.compression,
            "shard_size": config.shard_size,
            "corpus": {"documents": len(self.corpus), "digest": self.corpus.digest()},
            "embedder": None if self.embedder_info is None else self.embedder_info["fingerprint"],
            "codec_training_tokens": config.codec_training_tokens,
            "seed": config.seed,
        }

    def store(self) -> DocumentStore:
        return DocumentStore.open(self.output / STATES, self.encoder.fingerprint)


def prepare_build(context: BuildContext) -> float:
    """Start the build in the output folder (or check the one found there), and train the codec if it needs it.

    Runs once, before any shard is encoded (the main process; a distributed engine's driver). Returns the seconds
    spent training the codec (0 when it needs none or was trained by an earlier run).
    """
    _check_or_start(context.output, context.settings(), context.encoder.fingerprint)
    store = context.store()
    if store.codec.trained or (context.output / INDEX_FILE).is_file():
        return 0.0
    began = time.perf_counter()
    config = context.config
    store.train_codec(
        _codec_sample(context.corpus, context.encoder, config.codec_training_tokens, config.seed), config.seed
    )
    return time.perf_counter() - began


def encode_shards(context: BuildContext, shards: list[int], show_progress: bool = False) -> int:
    """Encode and commit the shards numbered ``shards`` that are not committed yet; returns how many were encoded.

    The unit of work any engine can run, in any order and on any worker: shard ``k`` depends only on the corpus,
    the model and the codec (trained by ``prepare_build``).
    """
    config, corpus, output = context.config, context.corpus, context.output
    store = context.store()
    store.reload_codec()
    encoded = 0
    for number in tqdm(shards, desc="encoding shards", unit="shard", disable=not show_progress):
        begin = number * config.shard_size
        ids = corpus.ids[begin : begin + config.shard_size]
        texts = corpus.texts[begin : begin + config.shard_size]
        if not (store.has_shard(number) and store.shard_document_ids(number) == ids):
            store.write_shard(ids, context.encoder.encode(texts), texts, number=number, keep_texts=True)
            encoded += 1
        if context.embedder is not None and not _dense_part(output, number).is_file():
            _write_dense_part(output, number, embed_documents(context.embedder, texts, config.batch_size))
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
    context = BuildContext.load(config, config.device or state.device)
    finished = context.output / INDEX_FILE
    codec_seconds = prepare_build(context) if state.is_main_process else 0.0
    state.wait_for_everyone()
    if finished.is_file():
        return json.loads(finished.read_text(encoding="utf-8")) if state.is_main_process else None
    mine = list(range(state.process_index, context.shard_count, state.num_processes))
    began = time.perf_counter()
    encoded = encode_shards(context, mine, show_progress=config.show_progress and state.is_main_process)
    encoding_seconds = time.perf_counter() - began
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    build = {
        "processes": state.num_processes,
        "device": str(context.encoder.model.device),
        "shards_encoded_by_this_run": encoded if state.num_processes == 1 else None,
        "codec_training_seconds": round(codec_seconds, 3),
        "encoding_seconds": round(encoding_seconds, 3),
    }
    return finalize_index(context, build, started)


def finalize_index(
    context: BuildContext, build: dict[str, Any] | None = None, started: float | None = None
) -> dict[str, Any]:
    """Check that every shard is committed, build the first stages and write ``index.json`` (once, at the end).

    ``build`` and ``started`` (a ``time.perf_counter()``) describe the build for ``index.json``.
    """
    config, corpus, output = context.config, context.corpus, context.output
    build = dict(build or {})
    store = context.store()
    missing = [shard_name(k) for k in range(context.shard_count) if not store.has_shard(k)]
    if missing:
        raise IndexBuildError(
            f"{len(missing)} of {context.shard_count} shards are missing from {store.folder} (e.g. {missing[:3]}); "
            "run the same command again to encode them"
        )
    if store.document_ids != corpus.ids:
        raise StoreError(f"{store.folder} does not hold the corpus's documents in order; delete {output} and rebuild")
    began = time.perf_counter()
    bm25 = BM25FirstStage.build(corpus.ids, corpus.texts, output / BM25)
    build["bm25_seconds"] = round(time.perf_counter() - began, 3)
    first_stages: dict[str, Any] = {"bm25": bm25.describe()}
    if context.embedder_info is not None:
        from safetensors.numpy import load_file

        parts = [load_file(_dense_part(output, k))["vectors"] for k in range(context.shard_count)]
        DenseFirstStage.save(output / DENSE, np.concatenate(parts), corpus.ids, context.embedder_info)
        first_stages["dense"] = context.embedder_info
    if started is not None:
        build["seconds"] = round(time.perf_counter() - started, 3)
    build["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tokens = store.token_count
    info = {
        "format": INDEX_FORMAT,
        "model": str(config.model),
        "fingerprint": context.encoder.fingerprint,
        "compression": store.codec.name,
        "bytes_per_token": store.codec.bytes_per_token(),
        "float32_bytes_per_token": 4 * store.codec.hidden_size,
        "documents": len(store),
        "tokens": tokens,
        "shards": context.shard_count,
        "store_bytes": store.nbytes(),
        "corpus": {"source": str(corpus.source), "digest": corpus.digest()},
        "first_stages": first_stages,
        "config": asdict(config),
        "build": build,
    }
    atomic_write_text(output / INDEX_FILE, json.dumps(info, indent=2) + "\n")
    for part in sorted((output / DENSE_PARTS).glob("part-*.safetensors")):
        part.unlink()
    if (output / DENSE_PARTS).is_dir():
        (output / DENSE_PARTS).rmdir()
    return info


def transcode_index(
    source: str | Path,
    output: str | Path,
    compression: str,
    codec_training_tokens: int = 131_072,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Copy a float32 index with its states stored as ``compression``, without running the model.

    Shard by shard (an interrupted copy resumes); product quantisation is trained on ``codec_training_tokens``
    states of documents drawn with ``seed``, read from the source. The first stages are copied as they are.
    """
    source, output = Path(source), Path(output)
    info = json.loads((source / INDEX_FILE).read_text(encoding="utf-8"))
    if info["compression"] != "float32":
        raise IndexBuildError(
            f"{source} stores its states as {info['compression']}; transcode from a float32 index (compressing "
            "twice adds both errors)"
        )
    if (output / INDEX_FILE).is_file():
        done = json.loads((output / INDEX_FILE).read_text(encoding="utf-8"))
        if done.get("compression") != compression or done.get("build", {}).get("transcoded_from") != str(source):
            raise IndexBuildError(f"{output} already holds another index; choose another output")
        return done
    started = time.perf_counter()
    states = DocumentStore.open(source / STATES)
    target = DocumentStore.open_or_create(output / STATES, states.fingerprint, compression)
    if not target.codec.trained:
        order = np.random.default_rng(seed).permutation(len(states))
        ids, total = [], 0
        for row in order:
            ids.append(states.document_ids[row])
            total += states.token_counts(ids[-1:])[0]
            if total >= codec_training_tokens:
                break
        batch = states.get(ids)
        sample = batch.hidden_states[batch.attention_mask.bool()].numpy()
        if len(sample) > codec_training_tokens:
            keep = np.random.default_rng(seed).choice(len(sample), codec_training_tokens, replace=False)
            sample = sample[np.sort(keep)]
        target.train_codec(sample, seed)
    names = states.shard_names()
    for name, ids, decoded, texts in tqdm(
        states.iter_shards(), total=len(names), desc="transcoding shards", disable=not show_progress
    ):
        number = int(name[len("shard-") : -len(".safetensors")])
        if not (target.has_shard(number) and target.shard_document_ids(number) == ids):
            target.write_shard(ids, decoded, texts, number=number, keep_texts=texts is not None)
    for folder in (BM25, DENSE):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, output / folder, dirs_exist_ok=True)
    build_settings = json.loads((source / BUILD_FILE).read_text(encoding="utf-8")) | {"compression": compression}
    atomic_write_text(output / BUILD_FILE, json.dumps(build_settings, indent=2) + "\n")
    info = info | {
        "compression": target.codec.name,
        "bytes_per_token": target.codec.bytes_per_token(),
        "store_bytes": target.nbytes(),
        "build": {
            "transcoded_from": str(source),
            "seconds": round(time.perf_counter() - started, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    atomic_write_text(output / INDEX_FILE, json.dumps(info, indent=2) + "\n")
    return info
