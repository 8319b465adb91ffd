"""The document store and MICE indexes (indexing/): codecs against faiss and by hand, the store's guarantees
(atomic commits, checksums, fingerprints), builds (resume, 1 process = 2 processes), search against the model
scoring the same documents itself in a fresh process, and every fault the issue names.

Models are tiny random BERTs (MICE-ℓ2+2, hidden size 32) on the first documents of the packaged sample; one test
uses the packaged MiniLM as a dense embedder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tiny_models import build_tiny_backbone
from transformers import AutoTokenizer

from indexing.build import (
    BuildContext,
    IndexBuildError,
    IndexConfig,
    build_index,
    finalize_index,
    prepare_build,
    transcode_index,
)
from indexing.codecs import CodecError, make_codec
from indexing.corpus import load_corpus
from indexing.encoding import DocumentEncoder
from indexing.fingerprint import document_state_fingerprint
from indexing.first_stage import BM25FirstStage
from indexing.mice_index import EmptyIndexError, MiceIndex
from indexing.store import DocumentStore, FingerprintMismatchError, StoreError
from mice_rerank.cli import main as mice
from modeling_mice import MiceDocumentStates, MiceForSequenceClassification
from ranking_data.beir import BeirFormatError, load_beir, read_trec_run

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "mice_rerank" / "sample_data" / "debian"
DOCUMENTS = 60
SHARD_SIZE = 16
QUERY = "window manager for the X server"
# Subprocesses get one thread each: on a busy 2-core machine more threads mostly wait for each other.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread_everywhere():
    import faiss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_mice(folder: Path, backbone: Path, seed: int = 0, **config) -> Path:
    torch.manual_seed(seed)
    model = MiceForSequenceClassification.from_backbone(str(backbone), fusion_layer=2, interaction_layers=2, **config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny MICE, the same with other lower-layer weights, and the same with a shorter document truncation."""
    root = tmp_path_factory.mktemp("index_models")
    backbone = build_tiny_backbone(root, "bert", num_hidden_layers=4)
    AutoTokenizer.from_pretrained(backbone, model_max_length=128).save_pretrained(backbone)
    other = build_tiny_backbone(root / "other", "bert", num_hidden_layers=4, seed=7)
    AutoTokenizer.from_pretrained(other, model_max_length=128).save_pretrained(other)
    return {
        "mice": save_mice(root / "mice", backbone),
        "other_weights": save_mice(root / "other_weights", other),
        "shorter": save_mice(root / "shorter", backbone, max_document_length=24),
    }


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """The first documents of the packaged sample as a bare corpus.jsonl."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with (SAMPLE / "corpus.jsonl").open(encoding="utf-8") as source:
        path.write_text("".join(next(source) for _ in range(DOCUMENTS)), encoding="utf-8")
    return path


def config(models, corpus_file, output: Path, **overrides) -> IndexConfig:
    settings = {"compression": "float32", "shard_size": SHARD_SIZE, "batch_size": 8, "show_progress": False}
    settings |= {"codec_training_tokens": 1024, **overrides}
    return IndexConfig(model=str(models["mice"]), data=str(corpus_file), output=str(output), **settings)


@pytest.fixture(scope="module")
def float32_index(models, corpus_file, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("indexes") / "float32"
    build_index(config(models, corpus_file, output))
    return output


def assert_same_index(first: Path, second: Path) -> None:
    """Two builds of one corpus hold the same index: the document store byte for byte, the same settings and counts,
    and BM25 indexes that score alike (bm25s numbers its vocabulary in Python's per-process hash order)."""
    stores = [sorted((index / "states").glob("*.safetensors")) for index in (first, second)]
    assert [p.name for p in stores[0]] == [p.name for p in stores[1]]
    for a, b in zip(*stores, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    manifests = [json.loads((index / "states" / "store.json").read_text()) for index in (first, second)]
    assert manifests[0] | {"created": None} == manifests[1] | {"created": None}
    assert (first / "build.json").read_bytes() == (second / "build.json").read_bytes()
    infos = [json.loads((index / "index.json").read_text()) for index in (first, second)]
    for key in ("fingerprint", "compression", "bytes_per_token", "documents", "tokens", "shards", "store_bytes"):
        assert infos[0][key] == infos[1][key], key
    bm25 = [BM25FirstStage.load(index / "bm25") for index in (first, second)]
    queries = {str(i): text for i, text in enumerate([QUERY, "audio player", "library for python", "game"])}
    assert bm25[0].search(queries, 50) == bm25[1].search(queries, 50)


def tiny_model(models, name: str = "mice"):
    model = MiceForSequenceClassification.from_pretrained(models[name]).eval()
    return model, AutoTokenizer.from_pretrained(models[name])


# -- codecs --------------------------------------------------------------------------------------------------------


def states_sample(rows: int = 2000, hidden: int = 32, seed: int = 0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return (generator.standard_normal((rows, hidden)) * generator.uniform(0.1, 3.0, hidden)).astype(np.float32)


def decode(codec, arrays: dict[str, np.ndarray]) -> np.ndarray:
    return codec.decode({name: torch.from_numpy(array) for name, array in arrays.items()}).numpy()


def test_float_codecs_round_trip_and_their_sizes():
    states = states_sample()
    float32 = make_codec("float32", 32)
    assert np.array_equal(decode(float32, float32.encode(states)), states)
    float16 = make_codec("float16", 32)
    assert np.array_equal(decode(float16, float16.encode(states)), states.astype(np.float16).astype(np.float32))
    assert (float32.bytes_per_token(), float16.bytes_per_token()) == (128, 64)


def test_int8_codec_is_within_half_a_step_of_each_token_and_counts_its_scale():
    states = states_sample()
    states[3] = 0.0  # an all-zero token must not divide by zero
    codec = make_codec("int8", 32)
    arrays = codec.encode(states)
    assert arrays["states"].dtype == np.int8 and arrays["scales"].dtype == np.float16
    scales = arrays["scales"].astype(np.float32)[:, None]
    # The scale is max|x| / 127 rounded to float16, so |x| / s may reach 127.06: clipping adds at most that rounding.
    error = np.abs(decode(codec, arrays) - states)
    assert (error <= scales / 2 + np.abs(states) * 1e-3 + 1e-7).all()
    assert np.array_equal(decode(codec, arrays)[3], np.zeros(32, np.float32))
    assert codec.bytes_per_token() == 32 + 2


@pytest.mark.parametrize("name", ["pq8", "opq8"])
def test_product_quantisation_decodes_exactly_what_faiss_decodes(name):
    import faiss

    states = states_sample(1500)
    codec = make_codec(name, 32)
    codec.train(states[:1000], seed=0)
    arrays = codec.encode(states[1000:])
    assert arrays["codes"].shape == (500, 8) and arrays["codes"].dtype == np.uint8
    quantizer = faiss.ProductQuantizer(32, 8, 8)
    faiss.copy_array_to_vector(codec.centroids.reshape(-1), quantizer.centroids)
    reference = quantizer.decode(arrays["codes"])
    if codec.rotation_matrix is not None:
        reference = reference @ codec.rotation_matrix  # the rotation is orthogonal: its transpose undoes it
    np.testing.assert_allclose(decode(codec, arrays), reference, rtol=0, atol=1e-5)
    # Much better than nothing: the quantised states keep most of their energy.
    error = np.linalg.norm(decode(codec, arrays) - states[1000:]) / np.linalg.norm(states[1000:])
    assert error < 0.6
    assert codec.bytes_per_token() == 8


def test_unknown_or_impossible_compressions_are_refused():
    with pytest.raises(CodecError, match="unknown compression 'int4'"):
        make_codec("int4", 32)
    with pytest.raises(CodecError, match="must divide the hidden size 32"):
        make_codec("pq5", 32)


# -- the store -----------------------------------------------------------------------------------------------------


@pytest.fixture()
def store_with_documents(models, tmp_path):
    model, tokenizer = tiny_model(models)
    encoder = DocumentEncoder(model, tokenizer, batch_size=4)
    texts = load_corpus(SAMPLE).texts[:10]
    ids = [f"d{i}" for i in range(10)]
    store = DocumentStore.create(tmp_path / "store", encoder.fingerprint)
    states = encoder.encode(texts)
    store.write_shard(ids[:6], states[:6], texts[:6], keep_texts=True)
    store.write_shard(ids[6:], states[6:], texts[6:], keep_texts=True)
    return store, encoder, ids, texts, states


def test_store_gives_back_exactly_what_was_stored_in_any_order(store_with_documents):
    store, encoder, ids, texts, states = store_with_documents
    reopened = DocumentStore.open(store.folder, encoder.fingerprint)
    assert len(reopened) == 10 and reopened.shard_names() == ["shard-00000.safetensors", "shard-00001.safetensors"]
    order = [7, 2, 9, 0]
    got = reopened.get([ids[i] for i in order])
    assert got.hidden_states.dtype == torch.float32
    for row, i in enumerate(order):
        length = len(states[i])
        assert torch.equal(got.hidden_states[row, :length], states[i])
        assert got.attention_mask[row].tolist() == [1] * length + [0] * (got.attention_mask.shape[1] - length)
        assert not got.hidden_states[row, length:].any()
    assert reopened.texts([ids[9], ids[0]]) == [texts[9], texts[0]]
    assert reopened.token_count == sum(len(s) for s in states)
    assert reopened.verify() == 10
    with pytest.raises(KeyError, match=r"1 document id\(s\) are not in the store .*'nope'"):
        reopened.get(["d1", "nope"])


def test_the_states_equal_the_models_own_encode_documents(store_with_documents):
    store, encoder, ids, texts, _ = store_with_documents
    model, tokenizer = encoder.model, encoder.tokenizer
    with torch.inference_mode():
        for i in (0, 5, 9):  # one document alone: no padding, the model's own tokenization
            reference = model.encode_documents(**model.tokenize_documents(tokenizer, [texts[i]]))
            torch.testing.assert_close(store.get([ids[i]]).hidden_states, reference.hidden_states, rtol=0, atol=1e-5)


def test_a_half_written_shard_is_never_read_and_a_truncated_one_is_named(store_with_documents):
    store, encoder, *_ = store_with_documents
    shard = store.folder / "shard-00001.safetensors"
    # What an interrupted write leaves: a temporary file, never a shard name.
    (store.folder / ".shard.123.456.tmp").write_bytes(shard.read_bytes()[:100])
    assert len(DocumentStore.open(store.folder, encoder.fingerprint)) == 10
    shard.write_bytes(shard.read_bytes()[:-50])
    with pytest.raises(StoreError, match=re.escape(str(shard)) + ".*truncated"):
        DocumentStore.open(store.folder, encoder.fingerprint)


def test_a_flipped_byte_is_reported_with_the_shard_and_document(store_with_documents):
    store, encoder, ids, *_ = store_with_documents
    shard = store.folder / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0x10  # inside the last tensor's data; the header stays readable
    shard.write_bytes(bytes(data))
    damaged = DocumentStore.open(store.folder, encoder.fingerprint)
    failures = []
    for doc_id in ids[:6]:
        try:
            damaged.get([doc_id])
            damaged.texts([doc_id])
        except StoreError as error:
            failures.append(str(error))
    assert len(failures) == 1 and re.search(re.escape(str(shard)) + ".*is corrupt: document 'd.' .*CRC-32", failures[0])
    assert len(damaged.get(ids[6:])) == 4  # the other shard is intact
    with pytest.raises(StoreError, match="is corrupt"):
        damaged.verify()


def test_states_of_another_model_or_truncation_are_refused(store_with_documents, models):
    store, encoder, *_ = store_with_documents
    shorter = DocumentEncoder(*tiny_model(models, "shorter"))
    with pytest.raises(FingerprintMismatchError, match=r"max_document_length 128 \(stored\) vs 24 \(this model\)"):
        DocumentStore.open(store.folder, shorter.fingerprint)
    other = DocumentEncoder(*tiny_model(models, "other_weights"))
    with pytest.raises(FingerprintMismatchError, match="lower_layers_weights .*rebuild it with this model"):
        DocumentStore.open(store.folder, other.fingerprint)
    # A shard of another model's store copied into this one is refused by its own header.
    foreign = DocumentStore.create(store.folder.parent / "foreign", other.fingerprint)
    foreign.write_shard(["x"], other.encode(["some text"]), ["some text"])
    shutil.copy(foreign.folder / "shard-00000.safetensors", store.folder / "shard-00002.safetensors")
    with pytest.raises(StoreError, match="shard-00002.safetensors holds states of another model"):
        DocumentStore.open(store.folder, encoder.fingerprint)


def test_fingerprint_ignores_the_interaction_layers_but_not_the_tokenizer(models):
    model, tokenizer = tiny_model(models)
    before = document_state_fingerprint(model, tokenizer)
    with torch.no_grad():
        model.mice.interaction[0].output.dense.weight.add_(1.0)  # above the fusion layer: states unchanged
    assert document_state_fingerprint(model, tokenizer) == before
    model.mice.backbone.config.hidden_dropout_prob = 0.0  # dropout never acts on stored states
    assert document_state_fingerprint(model, tokenizer) == before
    model.mice.backbone.config.layer_norm_eps = 1e-6  # this does
    assert document_state_fingerprint(model, tokenizer)["lower_layers_config"] != before["lower_layers_config"]
    tokenizer.add_tokens(["zzzunseenword"])
    assert document_state_fingerprint(model, tokenizer)["tokenizer"] != before["tokenizer"]


def test_encode_missing_encodes_once_and_refuses_a_changed_text(models, tmp_path):
    encoder = DocumentEncoder(*tiny_model(models))
    store = DocumentStore.temporary(encoder.fingerprint, "float16")
    assert store.encode_missing({"a": "first text", "b": "second text"}, encoder) == ["a", "b"]
    assert store.encode_missing({"b": "second text", "c": "third"}, encoder) == ["c"]
    assert len(store) == 3 and len(store.shard_names()) == 2
    with pytest.raises(StoreError, match="holds document 'a' encoded from a different text"):
        store.encode_missing({"a": "first text, edited"}, encoder)
    folder = store.folder
    store.close()
    assert not folder.exists()


# -- building and searching ----------------------------------------------------------------------------------------

FRESH_PROCESS_SEARCH = r"""
import json, sys, torch
from indexing import MiceIndex
from indexing.encoding import DocumentEncoder
from modeling_mice import MiceDocumentStates
torch.set_num_threads(1)
index = MiceIndex.load(sys.argv[1])
index.batch_size = 8
hits = index.search(sys.argv[2], k=5, depth=20)
candidates = index.candidates({"q": sys.argv[2]}, depth=20)["q"]
ids = sorted(candidates, key=lambda d: (-candidates[d], d))
# The model encoding the same documents itself, in this process: each shard's documents as the build batched them.
store, encoder = index.store, DocumentEncoder(index.model, index.tokenizer, batch_size=8)
fresh = {}
for name in store.shard_names():
    number = int(name[6:11])
    shard_ids = store.shard_document_ids(number)
    fresh.update(zip(shard_ids, encoder.encode(store.texts(shard_ids))))
stored_equal = all(torch.equal(store.get([d]).hidden_states[0], fresh[d]) for d in store.document_ids)
with torch.inference_mode():
    query = index.model.tokenize_queries(index.tokenizer, [sys.argv[2]])
    own = []
    for begin in range(0, len(ids), 8):
        batch = [fresh[d] for d in ids[begin : begin + 8]]
        mask = [torch.ones(len(s), dtype=torch.long) for s in batch]
        pad = torch.nn.utils.rnn.pad_sequence
        states = MiceDocumentStates(pad(batch, batch_first=True), pad(mask, batch_first=True))
        own += index.model.score(**query, document_states=states).logits[:, 0].tolist()
    # And each document encoded and scored alone: no batch, no padding.
    model, tok = index.model, index.tokenizer
    alone = {d: model(**query, **model.tokenize_documents(tok, [t])).logits[0, 0].item()
             for d, t in zip(ids, store.texts(ids))}
print(json.dumps({"hits": [[h.document_id, h.score, h.text] for h in hits], "candidates": ids, "own": own,
                  "index_scores": index.rerank(sys.argv[2], ids), "alone": alone, "stored_equal": stored_equal}))
"""


def search_in_fresh_process(index: Path, query: str) -> dict:
    child = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SEARCH, str(index), query],
        capture_output=True,
        text=True,
        env=ONE_THREAD,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_round_trip_in_a_fresh_process_equals_the_model_scoring_the_documents_itself(float32_index, corpus_file):
    info = json.loads((float32_index / "index.json").read_text())
    corpus = load_corpus(corpus_file)
    assert info["documents"] == DOCUMENTS and info["shards"] == 4 and info["bytes_per_token"] == 128
    assert info["tokens"] > DOCUMENTS and info["fingerprint"]["max_document_length"] == 128
    result = search_in_fresh_process(float32_index, QUERY)
    # float32: the states read back are bit for bit those the model computes, and so are the scores.
    assert result["stored_equal"] is True
    assert result["index_scores"] == result["own"]
    ranked = sorted(zip(result["candidates"], result["own"], strict=True), key=lambda item: -item[1])[:5]
    assert [[d, s] for d, s, _ in result["hits"]] == [[d, s] for d, s in ranked]
    assert all(text == corpus.texts[corpus.ids.index(d)] for d, _, text in result["hits"])
    # Each document encoded alone differs from batched encoding by float rounding only.
    alone = [result["alone"][d] for d in result["candidates"]]
    np.testing.assert_allclose(result["index_scores"], alone, rtol=0, atol=1e-5)


PER_DOCUMENT_ARRAYS = ("offsets", "checksums", "text_bytes", "text_offsets")
# Largest score change allowed against float32 for the tiny model (scores ~0.5 apart from each other): measured
# 0.0002 (float16), 0.003 (int8), 0.03 (pq16) with about 5x margin; docs/results.md gives the real model's figures.
COMPRESSED_TOLERANCE = {"float16": 1e-3, "int8": 0.015, "pq16": 0.15}


@pytest.mark.parametrize("compression", list(COMPRESSED_TOLERANCE))
def test_compressed_indexes_score_within_the_stated_tolerance(
    compression, float32_index, models, corpus_file, tmp_path
):
    output = tmp_path / compression
    info = build_index(config(models, corpus_file, output, compression=compression))
    assert info["bytes_per_token"] == make_codec(compression, 32).bytes_per_token()
    # What the shards hold per token is exactly that (int8: its scales included); the rest is per document.
    per_token = 0
    for shard in (output / "states").glob("shard-*.safetensors"):
        with safe_open(shard, framework="numpy") as handle:
            arrays = [handle.get_tensor(name) for name in handle.keys() if name not in PER_DOCUMENT_ARRAYS]
        per_token += sum(array.nbytes for array in arrays)
    assert per_token == info["bytes_per_token"] * info["tokens"]
    exact, compressed = MiceIndex.load(float32_index), MiceIndex.load(output)
    candidates = exact.candidates({"q": QUERY}, depth=30)["q"]
    ids = sorted(candidates)
    difference = np.abs(np.array(compressed.rerank(QUERY, ids)) - np.array(exact.rerank(QUERY, ids)))
    assert difference.max() <= COMPRESSED_TOLERANCE[compression]
    assert difference.max() > 0  # it is lossy, and the scores do read the compressed states


def test_search_reads_only_the_candidates_states(float32_index, tmp_path):
    index_copy = tmp_path / "index"
    shutil.copytree(float32_index, index_copy)
    index = MiceIndex.load(index_copy)
    candidates = set(index.candidates({"q": QUERY}, depth=10)["q"])
    expected = [(hit.document_id, hit.score) for hit in index.search(QUERY, k=3, depth=10)]
    store = index.store
    for name in store.shard_names():  # damage every document that is not a candidate
        shard = store._shards[name]
        data = bytearray(shard.path.read_bytes())
        header_length = int.from_bytes(data[:8], "little")
        states_begin = 8 + header_length + json.loads(data[8 : 8 + header_length])["states"]["data_offsets"][0]
        for row, doc_id in enumerate(shard.document_ids):
            if doc_id not in candidates:
                begin = states_begin + int(shard.offsets[row]) * 128  # a float32 row of hidden size 32
                data[begin : begin + 4] = b"\xff\xff\xff\xff"
        shard.path.write_bytes(bytes(data))
    damaged = MiceIndex.load(index_copy)
    assert [(hit.document_id, hit.score) for hit in damaged.search(QUERY, k=3, depth=10)] == expected
    with pytest.raises(StoreError, match="is corrupt"):
        damaged.store.verify()


def test_an_index_built_by_two_processes_equals_one_built_by_one(models, corpus_file, tmp_path):
    one = tmp_path / "one"
    build_index(config(models, corpus_file, one, compression="pq16"))
    two = tmp_path / "two"
    # Two gloo processes on the CPU (accelerate's --cpu launcher would start only one).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu"]
    command += ["-m", "mice_rerank.cli", "index", "--model", str(models["mice"]), "--data", str(corpus_file)]
    command += ["--output", str(two), "--compression", "pq16", "--shard-size", str(SHARD_SIZE)]
    command += ["--batch-size", "8", "--codec-training-tokens", "1024", "--no-progress"]
    child = subprocess.run(command, capture_output=True, text=True, env=ONE_THREAD, cwd=REPO_ROOT, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads((two / "index.json").read_text())["build"]["processes"] == 2
    assert_same_index(one, two)


ENGINE_WORKER = r"""
import json, sys, torch
from indexing.build import BuildContext, IndexConfig, encode_shards
torch.set_num_threads(1)
context = BuildContext.load(IndexConfig(**json.loads(sys.argv[1])))
print(encode_shards(context, json.loads(sys.argv[2])))
"""


def test_encode_shard_tasks_run_by_any_engine_build_the_same_index(models, corpus_file, tmp_path):
    """What a distributed engine does (Ray Data tasks, a job array): the driver prepares the build and trains the
    codec, workers with their own model copy encode shards in any order, the driver finalises."""
    reference = tmp_path / "reference"
    build_index(config(models, corpus_file, reference, compression="pq16"))
    engine = config(models, corpus_file, tmp_path / "engine", compression="pq16")
    driver = BuildContext.load(engine)
    assert prepare_build(driver) > 0 and driver.shard_count == 4
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", ENGINE_WORKER, json.dumps(engine.__dict__), json.dumps(shards)],
            stdout=subprocess.PIPE,
            text=True,
            env=ONE_THREAD,
            cwd=REPO_ROOT,
        )
        for shards in ([3, 0], [1, 2])
    ]
    assert [int(worker.communicate(timeout=600)[0].split()[-1]) for worker in workers] == [2, 2]
    finalize_index(driver)
    assert_same_index(reference, tmp_path / "engine")


def test_an_interrupted_build_resumes_to_the_same_index(models, corpus_file, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    build_index(config(models, corpus_file, reference, compression="int8"))
    resumed = tmp_path / "resumed"
    original = DocumentStore.write_shard
    commits = []

    def interrupted_write(store, *args, **kwargs):
        if len(commits) == 2:
            (store.folder / ".shard.999.1.tmp").write_bytes(b"half a shard")  # as a kill in mid-write leaves it
            raise KeyboardInterrupt
        commits.append(original(store, *args, **kwargs))
        return commits[-1]

    monkeypatch.setattr(DocumentStore, "write_shard", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        build_index(config(models, corpus_file, resumed, compression="int8"))
    monkeypatch.undo()
    assert sorted(p.name for p in (resumed / "states").glob("shard-*")) == commits
    with pytest.raises(EmptyIndexError, match="stopped after 2 committed shard.*run the same mice index command"):
        MiceIndex.load(resumed)
    encoded = []
    monkeypatch.setattr(
        DocumentStore, "write_shard", lambda store, *a, **k: encoded.append(k["number"]) or original(store, *a, **k)
    )
    info = build_index(config(models, corpus_file, resumed, compression="int8"))
    assert encoded == [2, 3]  # the committed shards were kept
    assert info["build"]["shards_encoded_by_this_run"] == 2
    assert (resumed / "states" / ".shard.999.1.tmp").is_file()  # left alone: never read, never a shard
    assert_same_index(resumed, reference)


@pytest.mark.slow
def test_a_killed_build_process_resumes_to_the_same_index(models, corpus_file, tmp_path):
    """A real SIGKILL in the middle of a build (a bigger corpus and one document per batch keep it busy)."""
    import signal
    import time

    big = tmp_path / "corpus.jsonl"
    with (SAMPLE / "corpus.jsonl").open(encoding="utf-8") as source:
        big.write_text("".join(next(source) for _ in range(600)), encoding="utf-8")
    arguments = ["index", "--model", str(models["mice"]), "--data", str(big), "--compression", "float16"]
    arguments += ["--shard-size", "20", "--batch-size", "1", "--no-progress"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "mice_rerank.cli", *arguments, "--output", str(killed)], env=ONE_THREAD, cwd=REPO_ROOT
    )
    deadline = time.monotonic() + 240
    while len(list((killed / "states").glob("shard-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = len(list((killed / "states").glob("shard-*")))
    assert 3 <= committed < 30 and not (killed / "index.json").exists()
    assert mice([*arguments, "--output", str(killed)]) == 0
    assert mice([*arguments, "--output", str(tmp_path / "clean")]) == 0
    assert_same_index(killed, tmp_path / "clean")


# -- faults --------------------------------------------------------------------------------------------------------


def test_duplicate_document_ids_are_refused_with_ids_and_lines(models, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    lines = [{"_id": "a", "text": "one"}, {"_id": "b", "text": "two"}, {"_id": "a", "text": "three"}]
    lines += [{"_id": 7, "text": "four"}, {"_id": "7", "text": "five"}]  # ids are strings: 7 and "7" are one id
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    arguments = ["index", "--model", str(models["mice"]), "--data", str(corpus), "--output", str(tmp_path / "i")]
    assert mice(arguments) == 2
    error = capsys.readouterr().err
    assert re.search(r"repeats 2 _id value\(s\): 'a' on lines 1, 3; '7' on lines 4, 5; every _id must be unique", error)
    # The BEIR loader the evaluation uses refuses them too (it used to keep one text silently).
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    shutil.copy(corpus, beir / "corpus.jsonl")
    (beir / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n', encoding="utf-8")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\tb\t1\n", encoding="utf-8")
    with pytest.raises(BeirFormatError, match=r"corpus.jsonl repeats 2 _id value\(s\): 'a' on lines 1, 3"):
        load_beir(beir)


def test_an_index_is_refused_to_another_model_with_a_clear_message(float32_index, models, corpus_file, capsys):
    with pytest.raises(FingerprintMismatchError, match=r"max_document_length 128 \(stored\) vs 24 \(this model\)"):
        MiceIndex.load(float32_index, model=str(models["shorter"]))
    assert mice(["search", str(float32_index), QUERY, "--model", str(models["other_weights"])]) == 2
    assert "holds states of another model or other tokenizer settings (lower_layers_weights" in capsys.readouterr().err
    # Resuming a build into a folder that holds another model's build is refused too.
    other = IndexConfig(**{**config(models, corpus_file, float32_index).__dict__, "model": str(models["shorter"])})
    with pytest.raises(IndexBuildError, match="holds a build with other settings .*fingerprint"):
        build_index(other)


def test_searching_an_empty_or_unbuilt_index_gets_a_clear_error(models, tmp_path, capsys):
    assert mice(["search", str(tmp_path / "nothing"), "a query"]) == 2
    assert "does not exist; build an index there with mice index" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    with pytest.raises(EmptyIndexError, match="is not a MICE index"):
        MiceIndex.load(tmp_path / "folder")
    encoder = DocumentEncoder(*tiny_model(models))
    empty = MiceIndex(encoder.model, encoder.tokenizer, DocumentStore.temporary(encoder.fingerprint), {})
    with pytest.raises(EmptyIndexError, match="holds no documents: there is nothing to search"):
        empty.search("a query")


def test_search_cli_prints_results_and_writes_a_trec_run(float32_index, corpus_file, tmp_path, capsys):
    assert mice(["search", str(float32_index), QUERY, "--top-k", "3", "--depth", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = MiceIndex.load(float32_index).search(QUERY, k=3, depth=20)
    assert [line.split()[2] for line in lines] == [hit.document_id for hit in expected]
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "window manager"}\n{"_id": "q2", "text": "zzzz qqqq"}\n')
    run = tmp_path / "run.trec"
    assert mice(["search", str(float32_index), "--queries", str(queries), "--output", str(run), "--top-k", "4"]) == 0
    assert re.search(r"searched 2 queries \(bm25, depth 100\): p50 [\d.]+ ms, p95 [\d.]+ ms", capsys.readouterr().out)
    written = read_trec_run(run)
    assert list(written) == ["q1"] and len(written["q1"]) == 4  # q2 matches no term: no line
    hits = MiceIndex.load(float32_index).search("window manager", k=4)
    assert written["q1"] == pytest.approx({hit.document_id: hit.score for hit in hits}, abs=1e-6)
    assert mice(["search", str(float32_index), QUERY, "--first-stage", "dense"]) == 2
    assert "no dense first stage (build it with mice index --embedder" in capsys.readouterr().err


@pytest.mark.real_model
def test_dense_and_hybrid_first_stages_with_an_embedder_built_from_minilm(models, corpus_file, minilm_path, tmp_path):
    """A 2-layer SentenceTransformer cut from the packaged all-MiniLM-L6-v2 (the shape of an early-layer embedder)."""
    from sentence_transformers import SentenceTransformer

    embedder = SentenceTransformer(minilm_path, device="cpu")
    embedder[0].auto_model.encoder.layer = embedder[0].auto_model.encoder.layer[:2]
    embedder[0].auto_model.config.num_hidden_layers = 2
    embedder.save(str(tmp_path / "embedder"))
    output = tmp_path / "index"
    info = build_index(config(models, corpus_file, output, embedder=str(tmp_path / "embedder")))
    assert info["first_stages"]["dense"]["dimension"] == 384
    index = MiceIndex.load(output)
    corpus = load_corpus(corpus_file)
    reloaded = SentenceTransformer(str(tmp_path / "embedder"), device="cpu")
    documents = reloaded.encode(corpus.texts, normalize_embeddings=True)
    query = reloaded.encode([QUERY], normalize_embeddings=True)[0]
    cosine = dict(zip(corpus.ids, documents @ query, strict=True))
    dense = index.candidates({"q": QUERY}, depth=10, first_stage="dense")["q"]
    assert sorted(dense, key=dense.get, reverse=True) == sorted(cosine, key=cosine.get, reverse=True)[:10]
    assert [dense[d] for d in dense] == pytest.approx([cosine[d] for d in dense], abs=1e-5)
    bm25 = index.candidates({"q": QUERY}, depth=10)["q"]
    fused = index.candidates({"q": QUERY}, depth=10, first_stage="hybrid")["q"]

    def normalised(scores, doc_id):
        low, high = min(scores.values()), max(scores.values())
        return (scores[doc_id] - low) / (high - low) if doc_id in scores else 0.0

    by_hand = {d: 0.5 * normalised(bm25, d) + 0.5 * normalised(dense, d) for d in set(bm25) | set(dense)}
    assert fused == pytest.approx(dict(sorted(by_hand.items(), key=lambda i: (-i[1], i[0]))[:10]))
    hits = index.search(QUERY, k=3, first_stage="hybrid", depth=10)
    assert len(hits) == 3 and all(hit.document_id in fused for hit in hits)
    other = tmp_path / "other-embedder"
    embedder[0].auto_model.encoder.layer = embedder[0].auto_model.encoder.layer[:1]
    embedder.save(str(other))
    with pytest.raises(ValueError, match="is not the one the dense vectors .* were computed with"):
        MiceIndex.load(output, embedder=str(other)).search(QUERY, first_stage="dense")


def test_states_are_mice_document_states_for_the_model(float32_index):
    index = MiceIndex.load(float32_index)
    states = index.store.get(index.store.document_ids[:3])
    assert isinstance(states, MiceDocumentStates) and states.hidden_states.shape[-1] == 32


def test_the_evaluation_reads_the_states_of_an_index(float32_index, corpus_file):
    from evaluation.rerankers import MiceReranker

    index = MiceIndex.load(float32_index)
    index.batch_size = 8
    reranker = MiceReranker(index.info["model"], batch_size=8, cache_folder=float32_index, show_progress=False)
    assert reranker.store.folder == float32_index / "states"
    corpus = load_corpus(corpus_file)
    ids = corpus.ids[5:25]
    shards = reranker.store.shard_names()
    reranker.prepare(dict(zip(ids, corpus.texts[5:25], strict=True)))
    assert reranker.store.shard_names() == shards  # every document was there: nothing encoded, nothing written
    assert reranker.score_query(QUERY, corpus.texts[5:25], ids) == index.rerank(QUERY, ids)
    assert reranker.settings()["document_cache"] == str(float32_index / "states")


def test_transcoding_a_float32_index_equals_building_the_compressed_one(float32_index, models, corpus_file, tmp_path):
    built = tmp_path / "built"
    build_index(config(models, corpus_file, built, compression="int8"))
    info = transcode_index(float32_index, tmp_path / "transcoded", "int8", show_progress=False)
    assert info["compression"] == "int8" and info["build"]["transcoded_from"] == str(float32_index)
    assert_same_index(built, tmp_path / "transcoded")  # int8 needs no training: the same bytes
    with pytest.raises(IndexBuildError, match="transcode from a float32 index"):
        transcode_index(built, tmp_path / "again", "pq8")
