"""Teacher-score datasets: schema and bad input, importers, teachers and ensembles, candidate mining, resumable
builds, the CLI, and the round trip through ``datasets`` in a fresh process."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_backbone

from ranking_data.beir import load_beir
from ranking_data.bm25 import BM25Retriever
from ranking_data.candidates import candidates_from_ranking, candidates_from_run_file, mine_bm25_candidates
from ranking_data.importers import import_hofstaetter_scores, import_trec_run
from ranking_data.teacher_data import TeacherDataError, TeacherDataset, build_teacher_dataset
from ranking_data.teachers import (
    BiEncoderTeacher,
    BM25Teacher,
    CallableTeacher,
    CrossEncoderTeacher,
    EnsembleTeacher,
    MiceTeacher,
    Teacher,
    offline_teacher,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
QUERIES = {"q1": "purring cats", "q2": "barking dogs"}
DOCUMENTS = {"d1": "cats purr", "d2": "dogs bark", "d3": "birds sing", "d4": "fish swim"}


def small_dataset(changes: dict | None = None) -> TeacherDataset:
    rows = [
        {"query_id": "q1", "document_ids": ["d1", "d2", "d3"], "scores": [3.0, 2.0, 1.0], "labels": [1, 0, 0]},
        {"query_id": "q2", "document_ids": ["d3", "d2", "d4"], "scores": [0.5, 0.25, -1.0], "labels": [0, 1, 0]},
    ]
    for (row, column), value in (changes or {}).items():
        rows[row][column] = value
    return TeacherDataset.from_records(rows, QUERIES, DOCUMENTS)


# --- schema and bad input -------------------------------------------------------------------------------------


def test_training_rows_join_texts_lazily_and_keep_only_named_texts():
    data = small_dataset()
    assert data.documents["document_id"] == ["d1", "d2", "d3", "d4"]
    rows = data.training_rows()
    assert rows[1] == {
        "query": "barking dogs",
        "documents": ["birds sing", "dogs bark", "fish swim"],
        "scores": [0.5, 0.25, -1.0],
        "labels": [0, 1, 0],
    }
    top = data.training_rows(list_size=2)
    assert top[0]["documents"] == ["cats purr", "dogs bark"] and top[0]["scores"] == [3.0, 2.0]
    # q2's only positive is third; require_positive swaps it in for the last chosen document.
    assert data.training_rows(list_size=2, require_positive=True)[1]["labels"] == [0, 1]


def test_random_sampling_is_a_fixed_draw_per_seed_and_query():
    rows = [
        {"query_id": f"q{i}", "document_ids": [f"d{j}" for j in range(20)], "scores": list(range(20, 0, -1))}
        for i in range(3)
    ]
    data = TeacherDataset.from_records(
        rows, {f"q{i}": "q" for i in range(3)}, {f"d{j}": f"text {j}" for j in range(20)}
    )
    first = data.training_rows(list_size=5, sampling="random", seed=1)[:]
    again = data.training_rows(list_size=5, sampling="random", seed=1)[:]
    other = data.training_rows(list_size=5, sampling="random", seed=2)[:]
    assert first == again and first != other
    for scores, documents in zip(first["scores"], first["documents"], strict=True):
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)  # dataset order is kept
        assert [21 - s for s in scores] == [int(d.split()[1]) + 1 for d in documents]  # texts stay aligned


def test_nan_score_names_the_row():
    with pytest.raises(TeacherDataError, match=r"train row 1 \(query_id 'q2'\) has a NaN"):
        small_dataset({(1, "scores"): [0.5, math.nan, 1.0]})


def test_document_missing_from_documents_names_the_row():
    with pytest.raises(TeacherDataError, match=r"train row 1 \(query_id 'q2'\) names document id 'd9'"):
        small_dataset({(1, "document_ids"): ["d3", "d9", "d4"]})
    # The same check on configs built elsewhere (e.g. loaded from the Hub), where it runs on Arrow columns.
    good = small_dataset()
    documents = good.documents.filter(lambda row: row["document_id"] != "d4")
    with pytest.raises(TeacherDataError, match=r"train row 1 \(query_id 'q2'\) names document id\(s\) \['d4'\]"):
        TeacherDataset(good.train, good.queries, documents)


def test_empty_training_set_is_an_error():
    with pytest.raises(TeacherDataError, match="the training set is empty"):
        TeacherDataset.from_records([], QUERIES, DOCUMENTS)


def test_list_shorter_than_the_list_size_names_the_query():
    data = small_dataset({(1, "document_ids"): ["d3"], (1, "scores"): [0.5], (1, "labels"): [1]})
    with pytest.raises(
        TeacherDataError, match=r"train row 1 \(query_id 'q2'\) has 1 documents, fewer than the list size 3"
    ):
        data.training_rows(list_size=3)


def test_misaligned_lists_and_repeated_documents_are_errors():
    with pytest.raises(TeacherDataError, match=r"train row 0 \(query_id 'q1'\) has 2 scores for 3 documents"):
        small_dataset({(0, "scores"): [3.0, 2.0]})
    with pytest.raises(TeacherDataError, match=r"train row 0 \(query_id 'q1'\) lists document 'd1' more than once"):
        small_dataset({(0, "document_ids"): ["d1", "d2", "d1"]})


# --- importers ------------------------------------------------------------------------------------------------


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def msmarco_files(tmp_path):
    collection = write(tmp_path / "collection.tsv", ["0\tcats purr", "1\tdogs bark", "2\tbirds sing", "3\tunused"])
    queries = write(tmp_path / "queries.train.tsv", ["100\tpurring cats", "200\tbarking dogs"])
    return collection, queries


def test_hofstaetter_import_builds_one_list_per_query(tmp_path, msmarco_files):
    collection, queries = msmarco_files
    scores = write(
        tmp_path / "bert_cat_ensemble_scores_ids.tsv",
        ["9.5\t1.25\t100\t0\t1", "9.5\t4.0\t100\t0\t2", "7.0\t8.0\t200\t1\t2"],
    )
    data = import_hofstaetter_scores(scores, collection, queries)
    assert data.train[:] == {
        "query_id": ["100", "200"],
        "document_ids": [["0", "2", "1"], ["2", "1"]],
        "scores": [[9.5, 4.0, 1.25], [8.0, 7.0]],
        "labels": [[1, 0, 0], [0, 1]],
    }
    assert data.documents["document_id"] == ["0", "2", "1"]  # first-seen order; the unused passage is not stored
    assert data.training_rows()[1] == {
        "query": "barking dogs",
        "documents": ["birds sing", "dogs bark"],
        "scores": [8.0, 7.0],
        "labels": [0, 1],
    }
    assert data.metadata["format"] == "hofstaetter-triples"


def test_hofstaetter_bad_lines_are_named(tmp_path, msmarco_files):
    collection, queries = msmarco_files
    missing_passage = write(tmp_path / "a.tsv", ["9.5\t1.25\t100\t0\t1", "9.0\t2.0\t100\t0\t77"])
    with pytest.raises(TeacherDataError, match=r"a\.tsv:2 names id '77', which .*collection\.tsv does not hold"):
        import_hofstaetter_scores(missing_passage, collection, queries)
    missing_query = write(tmp_path / "b.tsv", ["9.5\t1.25\t100\t0\t1", "9.0\t2.0\t300\t0\t1"])
    with pytest.raises(TeacherDataError, match=r"b\.tsv:2 names id '300', which .*queries\.train\.tsv"):
        import_hofstaetter_scores(missing_query, collection, queries)
    nan = write(tmp_path / "c.tsv", ["9.5\t1.25\t100\t0\t1", "nan\t2.0\t200\t1\t2"])
    with pytest.raises(TeacherDataError, match=r"c\.tsv:2 has a NaN or infinite score"):
        import_hofstaetter_scores(nan, collection, queries)
    short = write(tmp_path / "d.tsv", ["9.5\t1.25\t100\t0"])
    with pytest.raises(TeacherDataError, match=r"d\.tsv:1 has 4 tab-separated fields"):
        import_hofstaetter_scores(short, collection, queries)
    empty = write(tmp_path / "e.tsv", [])
    with pytest.raises(TeacherDataError, match="the training set is empty"):
        import_hofstaetter_scores(empty, collection, queries)


def test_trec_run_import_gives_ranks_and_scores(tmp_path, msmarco_files):
    collection, queries = msmarco_files
    # RankZephyr-style file: lines out of order, a tie (ranked in file order), an unreliable rank column.
    run = write(
        tmp_path / "__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run",
        [
            "100 Q0 1 1 0.5 rankzephyr",
            "100 Q0 0 2 0.9 rankzephyr",
            "100 Q0 2 3 0.5 rankzephyr",
            "200 Q0 2 1 3.0 rankzephyr",
            "200 Q0 1 2 2.0 rankzephyr",
        ],
    )
    data = import_trec_run(run, queries, collection, depth=2, qrels={"100": {"0": 1}})
    assert data.train[:] == {
        "query_id": ["100", "200"],
        "document_ids": [["0", "1"], ["2", "1"]],
        "scores": [[0.9, 0.5], [3.0, 2.0]],
        "ranks": [[1, 2], [1, 2]],
        "labels": [[1, 0], [0, 0]],
    }
    assert data.training_rows()[0]["documents"] == ["cats purr", "dogs bark"]
    bad = write(tmp_path / "bad.run", ["100 Q0 0 1 0.9 x", "200 Q0 55 1 0.8 x"])
    with pytest.raises(TeacherDataError, match=r"bad\.run \(query '200'\) names id '55'"):
        import_trec_run(bad, queries, collection)
    with pytest.raises(TeacherDataError, match=r"train row 1 \(query_id '200'\) has a NaN"):
        import_trec_run(write(tmp_path / "nan.run", ["100 Q0 0 1 0.9 x", "200 Q0 1 1 nan x"]), queries, collection)


# --- teachers -------------------------------------------------------------------------------------------------


def test_ensemble_is_the_weighted_mean_of_per_query_normalised_scores():
    first = CallableTeacher(lambda query, docs: [1.0, 3.0, 2.0], "first")
    second = CallableTeacher(lambda query, docs: [10.0, 10.0, 20.0], "second")
    ensemble = EnsembleTeacher([first, second], weights=[1, 3])
    [scores] = ensemble.score(["q"], [["a", "b", "c"]], {"a": "", "b": "", "c": ""})
    # min-max: first -> [0, 1, 0.5], second -> [0, 0, 1]; (1 * first + 3 * second) / 4
    np.testing.assert_allclose(scores, [0.0, 0.25, 0.875])
    [zscores] = EnsembleTeacher([first], normalization="zscore").score(
        ["q"], [["a", "b", "c"]], {"a": "", "b": "", "c": ""}
    )
    np.testing.assert_allclose(zscores, np.array([-1.0, 1.0, 0.0]) * math.sqrt(1.5))
    assert ensemble.describe()["members"][1] == {"name": "second", "description": "", "weight": 3.0}


@pytest.fixture(scope="module")
def sample_train(sample_data):
    return load_beir(sample_data, "train")


@pytest.fixture(scope="module")
def sample_retriever(sample_train):
    return BM25Retriever().index(sample_train.corpus)


def test_bm25_teacher_scores_equal_the_retriever_scores(sample_train, sample_retriever):
    queries = dict(list(sample_train.queries.items())[:5])
    run = sample_retriever.search(queries, k=10)
    teacher = BM25Teacher(sample_retriever)
    scores = teacher.score(list(queries.values()), [list(run[q]) for q in queries], {})
    for query_id, values in zip(queries, scores, strict=True):
        np.testing.assert_allclose(values, list(run[query_id].values()), rtol=1e-6)
    with pytest.raises(KeyError, match="not in the BM25 index"):
        teacher.score(["cats"], [["no-such-doc"]], {})


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT cross-encoder (hidden 32) with the MiniLM vocabulary."""
    return str(build_tiny_backbone(tmp_path_factory.mktemp("tiny"), "bert", num_hidden_layers=2, cross_encoder=True))


def test_cross_encoder_teacher_gives_the_model_raw_logits(tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = CrossEncoderTeacher(tiny_bert, batch_size=2)
    queries, lists = ["purring cats", "barking dogs"], [["d1", "d2", "d3"], ["d4"]]
    scores = teacher.score(queries, lists, DOCUMENTS)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    for query, ids, values in zip(queries, lists, scores, strict=True):
        with torch.no_grad():
            logits = model(
                **tokenizer([query] * len(ids), [DOCUMENTS[d] for d in ids], padding=True, return_tensors="pt")
            ).logits
        np.testing.assert_allclose(values, logits[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_bi_encoder_teacher_gives_cosines_and_embeds_each_document_once(tiny_bert):
    teacher = BiEncoderTeacher(tiny_bert)
    encoded = []
    encode = teacher.model.encode
    teacher.model.encode = lambda texts, **kwargs: encoded.extend(texts) or encode(texts, **kwargs)
    scores = teacher.score(["purring cats", "barking dogs"], [["d1", "d2"], ["d2", "d3"]], DOCUMENTS)
    teacher.score(["birds"], [["d1", "d3"]], DOCUMENTS)
    assert sorted(d for d in encoded if d in DOCUMENTS.values()) == ["birds sing", "cats purr", "dogs bark"]
    query, documents = encode(["barking dogs"]), encode(["dogs bark", "birds sing"])
    expected = (documents @ query.T)[:, 0] / np.linalg.norm(documents, axis=1) / np.linalg.norm(query)
    np.testing.assert_allclose(scores[1], expected, rtol=1e-5)


def test_bi_encoder_teacher_reuses_given_document_embeddings_and_scores_the_same(tiny_bert):
    from evaluation.first_stage import DenseFirstStage
    from ranking_data.beir import BeirData

    plain, seeded = BiEncoderTeacher(tiny_bert), BiEncoderTeacher(tiny_bert)
    data = BeirData(
        "docs", {d: {"title": "", "text": t} for d, t in DOCUMENTS.items()}, {"q": "cats"}, {"q": {}}, "test"
    )
    doc_ids, embeddings, _ = DenseFirstStage(seeded.model).document_embeddings(data)
    seeded.add_document_embeddings(doc_ids, embeddings)
    encoded = []
    encode = seeded.model.encode
    seeded.model.encode = lambda texts, **kwargs: encoded.extend(texts) or encode(texts, **kwargs)
    queries, lists = ["purring cats", "barking dogs"], [["d1", "d2"], ["d3", "d4"]]
    np.testing.assert_allclose(
        seeded.score(queries, lists, DOCUMENTS), plain.score(queries, lists, DOCUMENTS), atol=1e-6
    )
    assert encoded == queries  # only the queries were embedded
    with pytest.raises(ValueError, match="expected 2 embeddings of size 32"):
        seeded.add_document_embeddings(["d1", "d2"], embeddings[:1])
    with pytest.raises(ValueError, match="normalised to unit length"):
        seeded.add_document_embeddings(doc_ids, 2 * embeddings)


def test_mice_teacher_scores_equal_joint_pair_scores(tmp_path):
    from transformers import AutoTokenizer

    from modeling_mice import MiceForSequenceClassification

    backbone = str(build_tiny_backbone(tmp_path, "bert", num_hidden_layers=3))
    model = MiceForSequenceClassification.from_backbone(backbone, fusion_layer=1, interaction_layers=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    teacher = MiceTeacher(model, tokenizer, batch_size=2)
    encoded = []
    encode = model.encode_documents
    model.encode_documents = lambda **inputs: encoded.append(len(inputs["document_input_ids"])) or encode(**inputs)
    queries, lists = ["purring cats", "barking dogs"], [["d1", "d2", "d3"], ["d3", "d2", "d4"]]
    scores = teacher.score(queries, lists, DOCUMENTS)
    assert sum(encoded) == 4  # four distinct documents, each encoded once for the whole batch
    for query, ids, values in zip(queries, lists, scores, strict=True):
        pairs = tokenizer([query] * len(ids), [DOCUMENTS[d] for d in ids], padding=True, return_tensors="pt")
        with torch.no_grad():
            np.testing.assert_allclose(values, model(**pairs).logits[:, 0].numpy(), rtol=1e-4, atol=1e-5)


# --- candidates -----------------------------------------------------------------------------------------------


def test_candidates_keep_positives_and_record_labels():
    run = {"q1": {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0}, "q2": {"a": 1.0}}
    qrels = {"q1": {"z": 2, "c": 1, "d": 0}, "q2": {"a": 1}, "q3": {"y": 1}}
    lists = candidates_from_ranking(run, qrels, depth=3)
    # q1: top-3 is a, b, c; the missed positive z replaces b, the lowest-ranked non-positive (d is cut by depth).
    assert [(c.query_id, c.document_ids, c.labels) for c in lists] == [
        ("q1", ["a", "c", "z"], [0, 1, 2]),
        ("q2", ["a"], [1]),
        ("q3", ["y"], [1]),  # not in the run: its positives only
    ]
    plain = candidates_from_ranking(run, qrels, depth=3, keep_positives=False)
    assert [(c.query_id, c.document_ids, c.labels) for c in plain] == [
        ("q1", ["a", "b", "c"], [0, 0, 1]),
        ("q2", ["a"], [1]),
    ]


def test_bm25_and_run_file_candidates_agree(tmp_path, sample_train, sample_retriever):
    from ranking_data.beir import write_trec_run

    data = dataclasses.replace(sample_train, qrels=dict(list(sample_train.qrels.items())[:20]))
    mined = mine_bm25_candidates(data, depth=8, retriever=sample_retriever)
    assert len(mined) == 20 and all(len(c.document_ids) == 8 and sum(c.labels) >= 1 for c in mined)
    write_trec_run(sample_retriever.search(data.queries, k=8), tmp_path / "bm25.run")
    from_file = candidates_from_run_file(tmp_path / "bm25.run", data, depth=8)
    assert [(c.query_id, c.document_ids, c.labels) for c in from_file] == [
        (c.query_id, c.document_ids, c.labels) for c in mined
    ]


# --- resumable build, CLI, round trip -------------------------------------------------------------------------


class FailingTeacher(Teacher):
    """Wraps a teacher; raises on the call after ``fail_after`` batches (a crash mid-build) and counts calls."""

    def __init__(self, teacher: Teacher, fail_after: int | None = None):
        self.teacher, self.fail_after, self.calls = teacher, fail_after, 0
        self.name, self.description = teacher.name, teacher.description

    def score(self, queries, document_ids, documents):
        if self.fail_after is not None and self.calls == self.fail_after:
            raise RuntimeError("interrupted")
        self.calls += 1
        return self.teacher.score(queries, document_ids, documents)


def test_interrupted_build_resumes_from_finished_batches(tmp_path, sample_train, sample_retriever):
    qrels = dict(list(sample_train.qrels.items())[:23])
    candidates = candidates_from_ranking(
        sample_retriever.search({q: sample_train.queries[q] for q in qrels}, 6), qrels, 6
    )
    documents = {d: sample_train.document_text(d) for d in sample_train.corpus}
    ensemble = EnsembleTeacher(
        [BM25Teacher(sample_retriever), CallableTeacher(lambda q, docs: [-len(d) for d in docs], "short")]
    )

    def build(teacher, folder, **kwargs):
        return build_teacher_dataset(
            candidates, sample_train.queries, documents, teacher, folder, batch_size=5, show_progress=False, **kwargs
        )

    reference = build(ensemble, tmp_path / "reference")
    crashing = FailingTeacher(ensemble, fail_after=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        build(crashing, tmp_path / "shards")
    assert sorted(p.name for p in (tmp_path / "shards").glob("batch-*")) == ["batch-000000.json", "batch-000001.json"]
    resumed_teacher = FailingTeacher(ensemble)
    resumed = build(resumed_teacher, tmp_path / "shards")
    assert resumed_teacher.calls == 3  # 23 queries in batches of 5: only the last three batches are scored
    assert resumed.train[:] == reference.train[:] and resumed.documents[:] == reference.documents[:]
    assert all(row["scores"] == sorted(row["scores"], reverse=True) for row in resumed.train)
    with pytest.raises(TeacherDataError, match="holds shards of another build"):
        build(CallableTeacher(lambda q, docs: [0.0] * len(docs), "other"), tmp_path / "shards")
    with pytest.raises(TeacherDataError, match="one finite score per document"):
        build(CallableTeacher(lambda q, docs: [math.nan] * len(docs), "nan"), tmp_path / "nan")
    with pytest.raises(TeacherDataError, match="the training set is empty"):
        build_teacher_dataset([], sample_train.queries, documents, ensemble, tmp_path / "empty")


def test_cli_build_then_reload_with_datasets_in_a_fresh_process(tmp_path, sample_data):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_teacher_dataset as cli
    finally:
        sys.path.pop(0)
    output = tmp_path / "teacher_dataset"
    argv = [
        "--beir",
        str(sample_data),
        "--max-queries",
        "12",
        "--depth",
        "5",
        "--teacher",
        "bm25",
        "--output",
        str(output),
        "--batch-size",
        "4",
    ]
    assert cli.main(argv) == 0
    assert not output.with_name("teacher_dataset.partial").exists()
    built = TeacherDataset.load_from_disk(output)
    assert len(built.train) == 12 and built.metadata["candidates"]["description"] == "BM25 top-5, judged positives kept"
    expected = built.training_rows(list_size=4)[:]

    script = (
        "import datasets, json, sys\n"
        "from ranking_data.teacher_data import TeacherDataset\n"
        "configs = datasets.load_from_disk(sys.argv[1])\n"
        "data = TeacherDataset(configs['train'], configs['queries'], configs['documents'])\n"
        "print(json.dumps({'configs': sorted(configs), 'rows': data.training_rows(list_size=4)[:]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(output)], capture_output=True, text=True, check=True)
    reloaded = json.loads(result.stdout)
    assert reloaded["configs"] == ["documents", "queries", "train"]
    assert reloaded["rows"] == json.loads(json.dumps(expected))
    # BM25 is the teacher here, so the top document of each stored list is the BM25 top document.
    run = (
        BM25Retriever()
        .index(load_beir(sample_data, "train").corpus)
        .search({q: built.queries[i]["text"] for i, q in enumerate(built.queries["query_id"])}, k=1)
    )
    assert [row["document_ids"][0] for row in built.train] == [next(iter(run[row["query_id"]])) for row in built.train]


def test_hub_configs_load_back_from_the_layout_push_to_hub_writes(tmp_path):
    data = small_dataset()
    configs = data.hub_configs()
    assert list(configs) == ["train", "queries", "documents"]
    # push_to_hub(repo, config_name=name) writes <name>/train-*.parquet and declares the configs in the README.
    readme = ["---", "configs:"]
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        config.to_parquet(tmp_path / name / "train-00000-of-00001.parquet")
        readme += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}/train-*"]
    (tmp_path / "README.md").write_text("\n".join([*readme, "---", ""]), encoding="utf-8")
    loaded = TeacherDataset.from_hub(str(tmp_path))
    for name, config in loaded.hub_configs().items():
        assert config.features == configs[name].features and config[:] == configs[name][:]
    assert loaded.training_rows()[:] == data.training_rows()[:]


def test_teacher_dataset_trains_a_cross_encoder(tmp_path, tiny_bert):
    from sentence_transformers import CrossEncoder

    from trainers import DistillationTrainer, DistillationTrainingArguments, MarginMSELoss

    small_dataset().save_to_disk(tmp_path / "kd")
    rows = TeacherDataset.load_from_disk(tmp_path / "kd").training_rows(list_size=3)
    model = CrossEncoder(tiny_bert)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "run"), report_to=[], per_device_train_batch_size=2, max_steps=2, save_strategy="no"
    )
    result = DistillationTrainer(model=model, args=args, train_dataset=rows, loss=MarginMSELoss(model)).train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())


@pytest.mark.real_model
def test_offline_teacher_is_the_mean_of_min_max_bm25_and_minilm_cosine(sample_train, sample_retriever, minilm_path):
    from sentence_transformers import SentenceTransformer

    teacher = offline_teacher(sample_retriever)
    assert [member.name for member in teacher.teachers] == ["bm25", "all-MiniLM-L6-v2"]
    queries = dict(list(sample_train.queries.items())[:3])
    run = sample_retriever.search(queries, k=5)
    lists = [list(run[q]) for q in queries]
    documents = {d: sample_train.document_text(d) for ids in lists for d in ids}
    scores = teacher.score(list(queries.values()), lists, documents)

    model = SentenceTransformer(minilm_path)
    for query_id, ids, values in zip(queries, lists, scores, strict=True):
        bm25 = np.array(list(run[query_id].values()))
        embeddings = model.encode([queries[query_id]] + [documents[d] for d in ids], normalize_embeddings=True)
        cosine = embeddings[1:] @ embeddings[0]
        minmax = [(x - x.min()) / (x.max() - x.min()) for x in (bm25, cosine)]
        np.testing.assert_allclose(values, (minmax[0] + minmax[1]) / 2, rtol=1e-4, atol=1e-5)
