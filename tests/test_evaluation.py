"""Evaluation harness: metrics against hand-computed values, re-ranking with known scorers, MICE's pre-encoded path
against the joint-pair path, the document-state cache, significance, the script's outputs, BM25 against the shared
collections' reference figures, and clear errors on bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from loaders import load_script
from tiny_models import build_tiny_backbone

from evaluation.harness import (
    EvaluationConfig,
    bm25_first_stage,
    check_run,
    evaluate,
    latency_curve,
    rerank,
    system_names,
    write_json,
)
from evaluation.metrics import compare_runs, evaluate_run, per_query_scores
from evaluation.report import markdown_report, plot_effectiveness, plot_latency, write_markdown
from evaluation.rerankers import CrossEncoderReranker, MiceReranker, ModelPathError, load_reranker
from indexing.store import StoreError
from ranking_data.beir import BeirFormatError, load_beir, read_trec_run, subsample_queries, write_trec_run

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_tiny_rerankers(folder: Path) -> tuple[Path, Path]:
    """A tiny random BERT cross-encoder folder and a MICE-ℓ2+2 folder built from it."""
    from transformers import AutoTokenizer

    from modeling_mice import MiceForSequenceClassification

    cross_encoder = build_tiny_backbone(folder, "bert", cross_encoder=True, num_hidden_layers=4)
    mice = MiceForSequenceClassification.from_backbone(str(cross_encoder), fusion_layer=2, interaction_layers=2)
    mice.save_pretrained(folder / "mice")
    AutoTokenizer.from_pretrained(str(cross_encoder)).save_pretrained(folder / "mice")
    return cross_encoder, folder / "mice"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy shared CPU mostly wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_rerankers(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_rerankers(tmp_path_factory.mktemp("rerankers"))


@pytest.fixture(scope="module")
def sample_split(sample_data):
    """12 test queries of the packaged Debian sample with their BM25 top 100."""
    data = subsample_queries(load_beir(sample_data, "test"), 12, seed=3)
    run, _ = bm25_first_stage(data, k=100)
    return data, run


class OracleScorer:
    """Scores each candidate by its relevance grade: the best ranking any re-ranker could produce."""

    kind = "oracle"

    def __init__(self, qrels):
        self.qrels = qrels
        self.query_ids: dict[str, str] = {}

    def prepare(self, documents):
        return 0.0

    def release(self):
        pass

    def score_query(self, query, documents, doc_ids):
        query_id = self.query_ids[query]
        return [float(self.qrels[query_id].get(doc_id, 0)) for doc_id in doc_ids]


# -- metrics ------------------------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    qrels = {"q1": {"d2": 1}, "q2": {"a": 2, "b": 1}, "q3": {"x": 1}}
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"b": 2.0, "a": 1.0}}  # q3 retrieved nothing
    q1_ndcg = (1 / math.log2(3)) / 1.0
    q2_ndcg = (1 / math.log2(2) + 2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3))
    scores = per_query_scores(qrels, run)
    assert scores["ndcg@10"] == pytest.approx({"q1": q1_ndcg, "q2": q2_ndcg, "q3": 0.0})
    assert scores["mrr@10"] == pytest.approx({"q1": 0.5, "q2": 1.0, "q3": 0.0})
    assert scores["map"] == pytest.approx({"q1": 0.5, "q2": (1 / 1 + 2 / 2) / 2, "q3": 0.0})
    assert scores["recall@100"] == pytest.approx({"q1": 1.0, "q2": 1.0, "q3": 0.0})
    means = evaluate_run(qrels, run)
    assert means["ndcg@10"] == pytest.approx((q1_ndcg + q2_ndcg) / 3)
    assert means["mrr@10"] == pytest.approx(0.5)


def test_significance_is_present_and_sane(sample_split):
    data, run = sample_split
    oracle = OracleScorer(data.qrels)
    oracle.query_ids = {text: query_id for query_id, text in data.queries.items()}
    reranked = rerank(oracle, data, run, depth=100, show_progress=False).run
    worst = {q: {d: -s for d, s in docs.items()} for q, docs in run.items()}  # BM25 upside down
    comparison = compare_runs(data.qrels, {"bm25": run, "oracle": reranked, "reversed": worst})
    p = comparison["p_values"]
    for metric in ("ndcg@10", "mrr@10", "map"):
        assert 0.0 <= p["oracle"]["bm25"][metric] <= 1.0
        assert p["oracle"]["bm25"][metric] == p["bm25"]["oracle"][metric]  # the paired test is symmetric
        assert p["oracle"]["reversed"][metric] < 0.05
        assert "reversed" in comparison["better_than"]["oracle"][metric]
        assert comparison["better_than"]["reversed"][metric] == []
    assert comparison["scores"]["oracle"]["ndcg@10"] > comparison["scores"]["bm25"]["ndcg@10"]


# -- re-ranking ---------------------------------------------------------------------------------------------------


def test_oracle_reranking_gives_the_known_metrics(sample_split):
    data, run = sample_split
    oracle = OracleScorer(data.qrels)
    oracle.query_ids = {text: query_id for query_id, text in data.queries.items()}
    for depth in (10, 100):
        result = rerank(oracle, data, run, depth=depth, show_progress=False)
        # Known-item: one relevant document per query, so the oracle puts it first whenever it is a candidate.
        found = [q for q in data.queries if any(d in data.qrels[q] for d in sorted(run[q], key=run[q].get)[-depth:])]
        metrics = evaluate_run(data.qrels, result.run)
        assert metrics["ndcg@10"] == pytest.approx(len(found) / len(data.queries))
        assert metrics["mrr@10"] == pytest.approx(len(found) / len(data.queries))
        # The rest of the first stage follows the re-ranked top: recall at 100 cannot change.
        assert metrics["recall@100"] == pytest.approx(evaluate_run(data.qrels, run)["recall@100"])
        assert all(set(result.run[q]) == set(run[q]) for q in run)
        assert len(result.query_ms) == len(data.queries)
        assert result.documents_per_query == [min(depth, len(run[q])) for q in run]


def test_mice_pre_encoded_path_equals_joint_pairs(tiny_rerankers, sample_split, tmp_path):
    _, mice_folder = tiny_rerankers
    data, run = sample_split
    joint = rerank(CrossEncoderReranker(str(mice_folder), batch_size=16), data, run, depth=20, show_progress=False)
    pre_encoded = MiceReranker(str(mice_folder), batch_size=7, cache_folder=tmp_path / "cache", show_progress=False)
    fast = rerank(pre_encoded, data, run, depth=20, chunk_queries=5, show_progress=False)
    for query_id in run:
        top = sorted(joint.run[query_id], key=joint.run[query_id].get, reverse=True)[:20]
        # Same scores up to float rounding (a random tiny model has near-ties, so the order itself may swap them).
        assert [fast.run[query_id][d] for d in top] == pytest.approx([joint.run[query_id][d] for d in top], abs=1e-4)
    assert fast.documents_prepared > 0 and fast.preparation_seconds > 0

    # A second evaluation reads every document from the on-disk cache and gives identical scores.
    cached = MiceReranker(str(mice_folder), batch_size=7, cache_folder=tmp_path / "cache", show_progress=False)
    assert len(cached.store) == len({d for q in run for d in sorted(run[q], key=run[q].get)[-20:]})
    again = rerank(cached, data, run, depth=20, show_progress=False)
    assert again.run == fast.run


def test_mice_reranker_takes_the_gpu_when_there_is_one(tiny_rerankers, monkeypatch):
    # Like sentence-transformers' CrossEncoder, so that both systems of a comparison run on the same device.
    import torch

    from modeling_mice import MiceForSequenceClassification

    _, mice_folder = tiny_rerankers
    moved = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(MiceForSequenceClassification, "to", lambda model, device: moved.append(device) or model)
    MiceReranker(str(mice_folder), show_progress=False)
    MiceReranker(str(mice_folder), device="cpu", show_progress=False)
    assert moved == ["cuda", "cpu"]


def test_document_store_errors_name_the_file_and_the_fix(tiny_rerankers, sample_split, tmp_path):
    _, mice_folder = tiny_rerankers
    data, _ = sample_split
    reranker = MiceReranker(str(mice_folder), cache_folder=tmp_path, show_progress=False)
    documents = {d: data.document_text(d) for d in list(data.corpus)[:5]}
    reranker.prepare(documents)
    shard = next(reranker.store.folder.glob("shard-*.safetensors"))
    assert reranker.store.folder.parent == tmp_path  # one store per model fingerprint in the cache folder

    changed = MiceReranker(str(mice_folder), cache_folder=tmp_path, show_progress=False)
    first = next(iter(documents))
    with pytest.raises(StoreError, match=re.escape(str(shard)) + r".*different text.*Delete that shard"):
        changed.prepare({first: documents[first] + " (edited)"})

    shard.write_bytes(b"not a safetensors file")
    with pytest.raises(StoreError, match=re.escape(str(shard)) + r".*not a readable safetensors shard.*Delete"):
        MiceReranker(str(mice_folder), cache_folder=tmp_path, show_progress=False)


# -- the harness and the script -----------------------------------------------------------------------------------


def test_a_document_cache_keeps_collections_whose_ids_repeat_apart(tiny_rerankers, sample_data, tmp_path):
    """Two collections share document ids with different texts (cranfield's and cisi's '928'): one --cache folder
    evaluates both, and gives the scores of an evaluation without a cache."""
    _, mice_folder = tiny_rerankers
    folders = []
    for name, suffix in (("alpha", ""), ("beta", " (another collection's text)")):
        folder = tmp_path / name
        shutil.copytree(sample_data, folder)
        lines = (folder / "corpus.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        (folder / "corpus.jsonl").write_text(
            "".join(json.dumps({**r, "text": r["text"] + suffix}) + "\n" for r in rows)
        )
        folders.append(str(folder))

    def figures(cache_folder):
        config = EvaluationConfig(
            data=folders,
            models=[f"mice:{mice_folder}"],
            depth=5,
            max_queries=3,
            seed=1,
            progress=False,
            cache_folder=cache_folder,
        )
        results = evaluate(config)["results"]["mice"]
        return {name: results[name]["metrics"] for name in ("alpha", "beta")}

    assert figures(str(tmp_path / "cache")) == figures(None)
    for name in ("alpha", "beta"):  # one store per collection, each holding its documents
        assert any((tmp_path / "cache" / name).glob("*/shard-*.safetensors"))
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["alpha", "beta"]  # and no other store


def test_evaluate_writes_json_markdown_and_plots(tiny_rerankers, sample_data, tmp_path):
    cross_encoder, mice_folder = tiny_rerankers
    config = EvaluationConfig(
        data=[str(sample_data)],
        models=["bm25", f"ce:{cross_encoder}", f"mice:{mice_folder}"],
        depth=10,
        max_queries=6,
        seed=1,
        runs_folder=str(tmp_path / "runs"),
        progress=False,
    )
    report = evaluate(config)
    path = write_json(report, tmp_path / "evaluation.json")
    loaded = json.loads(path.read_text())
    assert list(loaded["results"]) == ["bm25", "bert-ce", "mice"]
    for system in loaded["results"]:
        entry = loaded["results"][system]["debian"]
        assert set(entry["metrics"]) == {"ndcg@10", "mrr@10", "recall@100", "map"}
        assert all(0.0 <= value <= 1.0 for value in entry["metrics"].values())
    assert loaded["results"]["bert-ce"]["debian"]["latency"]["queries"] == 6
    assert loaded["results"]["mice"]["debian"]["document_encoding"]["documents"] > 0
    assert "document_encoding" not in loaded["results"]["bert-ce"]["debian"]
    assert loaded["settings"]["depth"] == 10 and loaded["settings"]["seed"] == 1
    assert loaded["settings"]["versions"]["ir-measures"] != "not installed"
    assert loaded["systems"]["mice"]["fusion_layer"] == 2
    assert loaded["datasets"]["debian"]["queries"] == 6
    # The written TREC runs read back as the runs that were evaluated.
    bm25_run = read_trec_run(tmp_path / "runs" / "debian" / "bm25.trec")
    assert evaluate_run(subsample_queries(load_beir(sample_data), 6, seed=1).qrels, bm25_run) == pytest.approx(
        loaded["results"]["bm25"]["debian"]["metrics"]
    )

    # A second call with the same settings resumes from the recorded runs: identical results, latencies included.
    again = evaluate(config)
    assert again["results"] == report["results"]

    markdown = write_markdown(loaded, tmp_path / "report.md").read_text()
    assert "| a | bm25 |" in markdown and "| c | mice |" in markdown
    assert f"{loaded['results']['mice']['debian']['metrics']['ndcg@10']:.3f}" in markdown
    assert plot_effectiveness(loaded, tmp_path / "bars.png").stat().st_size > 1000

    reranker = load_reranker(str(mice_folder), show_progress=False)
    data = load_beir(sample_data)
    candidates, _ = bm25_first_stage(subsample_queries(data, 4), k=20)
    curve = latency_curve(reranker, data, candidates, depths=[5, 10], max_queries=4)
    assert [point["documents"] for point in curve] == [5, 10]
    assert all(point["mean_ms"] > 0 and point["p95_ms"] >= point["p50_ms"] for point in curve)
    assert plot_latency({"mice": curve}, tmp_path / "latency.png").stat().st_size > 1000


def test_system_names_are_short_and_unique():
    specs = ["mice:runs/bce/mice", "ce:runs/bce/cross-encoder", "runs/hinge/mice", "org/name", "runs/hinge/mice"]
    assert system_names(specs) == ["bce/mice", "cross-encoder", "hinge/mice", "name", "hinge/mice'"]


def test_significance_markers_in_markdown():
    report = {
        "settings": {"split": "test", "first_stage": "bm25", "depth": 10, "batch_size": 8, "max_queries": None},
        "datasets": {"d": {"queries": 3, "documents": 9}},
        "results": {
            "bm25": {"d": {"metrics": {"ndcg@10": 0.5}}},
            "mice": {"d": {"metrics": {"ndcg@10": 0.7}, "latency": {"mean_ms": 2.0, "p50_ms": 1.5, "p95_ms": 3.0}}},
        },
        "significance": {
            "d": {"test": "t", "max_p": 0.05, "better_than": {"bm25": {"ndcg@10": []}, "mice": {"ndcg@10": ["bm25"]}}}
        },
    }
    report["settings"]["metrics"] = ["ndcg@10"]
    markdown = markdown_report(report)
    assert "| b | mice | 0.700ᵃ | 2.0 | 1.5 | 3.0 | — |" in markdown
    assert "| a | bm25 | 0.500 | — | — | — | — |" in markdown


def test_script_reports_bad_input_clearly(tmp_path, sample_data, capsys):
    script = load_script("evaluate")
    assert script.main(["--data", str(sample_data), "--models", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert script.main(["--data", str(tmp_path), "--json", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corpus.jsonl is missing" in err and "\nhint: " in err
    assert "Traceback" not in err and not (tmp_path / "e.json").exists()
    # Two run files for one folder: the configuration itself is refused.
    assert script.main(["--data", str(sample_data), "--run", "a.trec", "b.trec"]) == 2
    assert "give one run file per data folder" in capsys.readouterr().err


# -- bad input ----------------------------------------------------------------------------------------------------


def _write_beir(folder: Path, qrels: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "cats"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


def test_folder_not_in_beir_layout(tmp_path):
    with pytest.raises(BeirFormatError, match="corpus.jsonl is missing"):
        load_beir(tmp_path)
    with pytest.raises(BeirFormatError, match="is not a folder"):
        load_beir(tmp_path / "absent")
    folder = _write_beir(tmp_path / "c", "q1\td1\t1\n")
    with pytest.raises(BeirFormatError, match=r"dev.tsv is missing \(splits available: \['test'\]\)"):
        load_beir(folder, "dev")


def test_qrels_naming_unknown_queries_or_documents(tmp_path):
    with pytest.raises(BeirFormatError, match=r"1 query id\(s\) missing from queries.jsonl, e.g. \['q9'\]"):
        load_beir(_write_beir(tmp_path / "a", "q1\td1\t1\nq9\td1\t1\n"))
    with pytest.raises(BeirFormatError, match=r"1 document id\(s\) missing from corpus.jsonl, e.g. \['d7'\]"):
        load_beir(_write_beir(tmp_path / "b", "q1\td7\t1\n"))


def test_run_file_in_the_wrong_format_or_for_another_collection(tmp_path, sample_data):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 d1 1 0.5\n")
    with pytest.raises(BeirFormatError, match=r"bad.trec:1 has 4 fields; a TREC run line is 'qid Q0 docid rank score"):
        read_trec_run(bad)
    bad.write_text("q1 Q0 d1 first 0.5 tag\n")
    with pytest.raises(BeirFormatError, match="is not a number"):
        read_trec_run(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_trec_run(tmp_path / "absent.trec")
    data = load_beir(sample_data)
    foreign = tmp_path / "foreign.trec"
    write_trec_run({"q1": {"nope": 1.0}}, foreign)
    with pytest.raises(BeirFormatError, match="document id.*missing from debian/corpus.jsonl.*run for this collection"):
        check_run(read_trec_run(foreign), data, str(foreign))
    partial = tmp_path / "partial.trec"
    first_query = next(iter(data.queries))
    write_trec_run({first_query: {next(iter(data.corpus)): 1.0}}, partial)
    with pytest.warns(
        UserWarning, match=f"ranks nothing for {len(data.queries) - 1} of the {len(data.queries)} judged"
    ):
        assert check_run(read_trec_run(partial), data, str(partial))[first_query]
    write_trec_run({"unknown-query": {next(iter(data.corpus)): 1.0}}, foreign)
    with pytest.raises(BeirFormatError, match="ranks none of the .* judged queries"):
        check_run(read_trec_run(foreign), data, str(foreign))


def test_model_path_that_does_not_exist(tmp_path, tiny_rerankers):
    cross_encoder, _ = tiny_rerankers
    with pytest.raises(ModelPathError, match="does not exist"):
        load_reranker(str(tmp_path / "missing-model"))
    with pytest.raises(ModelPathError, match="holds no config.json"):
        load_reranker(str(tmp_path))
    with pytest.raises(ModelPathError, match="is not a MICE model"):
        load_reranker(f"mice:{cross_encoder}")


# -- BM25 against the shared collections' reference figures -------------------------------------------------------


def _reference_bm25(readme: Path) -> dict[str, float]:
    """The README's 'BM25 nDCG@10' column, keyed by folder name."""
    reference = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 7 and re.fullmatch(r"0\.\d+", cells[6]):
            reference[cells[0].split(" ")[0]] = float(cells[6])
    return reference


@pytest.mark.shared_data
@pytest.mark.slow
def test_bm25_matches_the_reference_figures(shared_data):
    reference = _reference_bm25(shared_data / "README.md")
    folders = sorted(p for p in shared_data.iterdir() if (p / "corpus.jsonl").is_file())
    assert {p.name for p in folders} == set(reference), "every shared collection has a reference BM25 figure"
    for folder in folders:
        data = load_beir(folder, "test")
        run, _ = bm25_first_stage(data, k=1000)
        measured = evaluate_run(data.qrels, run)["ndcg@10"]
        assert abs(measured - reference[folder.name]) <= 0.02, (
            f"{folder.name}: {measured:.4f} vs {reference[folder.name]}"
        )
