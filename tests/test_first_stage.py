"""First stages behind one interface: BM25, run files, exact dense search (faiss), and the BM25 + dense hybrid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from loaders import load_script
from sentence_transformers import SentenceTransformer
from tiny_models import build_tiny_backbone

from embeddings.early_layers import save_early_layer_model
from evaluation.first_stage import (
    BM25FirstStage,
    DenseFirstStage,
    FirstStageError,
    HybridFirstStage,
    bm25_first_stage,
    encode_in_chunks,
    evaluate_first_stages,
    exact_search,
    first_stage_from_spec,
)
from evaluation.harness import EvaluationConfig, evaluate, subsample_queries
from evaluation.metrics import evaluate_run
from evaluation.report import markdown_report
from ranking_data.beir import load_beir, read_trec_run, top_documents, write_trec_run
from ranking_data.fusion import fuse_runs, interpolate, normalise_per_query, with_rest_of_ranking


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory, one_thread):
    """A tiny cross-encoder and the SentenceTransformer folder of its first two layers."""
    folder = tmp_path_factory.mktemp("first-stage")
    cross_encoder = build_tiny_backbone(folder, "bert", cross_encoder=True)
    return cross_encoder, save_early_layer_model(cross_encoder, folder / "embedder", layer=2)


@pytest.fixture(scope="module")
def small_beir(sample_data, tmp_path_factory) -> Path:
    """A 300-document BEIR folder cut from the sample: 12 test queries, their judged documents and 288 others."""
    data = subsample_queries(load_beir(sample_data, "test"), 12)
    judged = [d for judgements in data.qrels.values() for d in judgements]
    kept = judged + [d for d in data.corpus if d not in judged][: 300 - len(judged)]
    folder = tmp_path_factory.mktemp("small") / "debian"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, **data.corpus[d]}) + "\n" for d in kept))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in data.queries.items())
    )
    rows = [f"{q}\t{d}\t{score}" for q, judgements in data.qrels.items() for d, score in judgements.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def small_split(small_beir):
    return load_beir(small_beir, "test")


def test_fusion_is_the_weighted_sum_of_per_query_min_max_scores():
    dense = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    bm25 = {"q": {"b": 12.0, "d": 2.0}, "r": {"x": 3.0}}
    assert normalise_per_query(dense) == {"q": {"a": 1.0, "b": 0.5, "c": 0.0}}
    fused = fuse_runs([dense, bm25], [0.25, 0.75])
    # a: 0.25*1; b: 0.25*0.5 + 0.75*1; c: 0; d: 0.75*0 (bm25's floor); r's only document scores 0.75*1.
    assert fused["q"] == pytest.approx({"b": 0.875, "a": 0.25, "c": 0.0, "d": 0.0})
    assert list(fused["q"]) == ["b", "a", "c", "d"]  # best first, ties by id
    assert fused["r"] == {"x": 0.75}
    assert list(fuse_runs([dense, bm25], [0.25, 0.75], k=2)["q"]) == ["b", "a"]


def test_interpolation_rescores_the_reranked_top_and_keeps_the_rest_of_the_first_stage():
    first = {"q": {"a": 10.0, "b": 8.0, "c": 6.0, "d": 4.0, "e": 2.0}}
    # A re-ranking of the top 3 (c best), the rest of the first stage below it, as harness.rerank writes it.
    reranked = {"q": with_rest_of_ranking({"a": 0.0, "b": 1.0, "c": 3.0}, first["q"])}
    assert reranked["q"] == {"a": 0.0, "b": 1.0, "c": 3.0, "d": -1.0, "e": -2.0}
    # Normalised over the top 3: re-ranker a 0, b 1/3, c 1; first stage a 1, b 0.5, c 0.
    fused = interpolate(first, reranked, depth=3, weight=0.75)["q"]
    assert fused["a"] == pytest.approx(0.75)
    assert fused["b"] == pytest.approx(0.25 / 3 + 0.375)
    assert fused["c"] == pytest.approx(0.25)
    assert top_documents(fused, 5) == ["a", "b", "c", "d", "e"]
    assert top_documents(interpolate(first, reranked, 3, 0.0)["q"], 5) == ["c", "b", "a", "d", "e"]
    assert top_documents(interpolate(first, reranked, 3, 1.0)["q"], 5) == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match=r"weight must lie in \[0, 1\]"):
        interpolate(first, reranked, 3, 1.5)
    with pytest.raises(ValueError, match="holds documents the first stage did not retrieve"):
        interpolate({"q": {"a": 1.0, "b": 0.5}}, reranked, 3, 0.5)
    with pytest.raises(ValueError, match="query q of the first stage is missing"):
        interpolate(first, {"r": {"a": 1.0}}, 3, 0.5)


def test_interpolation_script_tunes_on_one_split_and_reports_on_another(small_beir, tmp_path, capsys):
    script = load_script("interpolate_first_stage")
    data = load_beir(small_beir, "test")
    first, _ = bm25_first_stage(data, 10)
    # A re-ranker that reverses BM25's top 3, so that the weights of the grid give different runs.
    reranked = {
        q: with_rest_of_ranking({d: float(i) for i, d in enumerate(top_documents(r, 3))}, r) for q, r in first.items()
    }
    write_trec_run(first, tmp_path / "first.trec")
    write_trec_run(reranked, tmp_path / "reranked.trec")
    pipeline = ["--pipeline", f"bm25={tmp_path / 'first.trec'},{tmp_path / 'reranked.trec'}"]
    common = ["--data", str(small_beir), "--depth", "3", *pipeline]
    assert script.main([*common, "--weights", "0", "0.5", "1", "--json", str(tmp_path / "tuned.json")]) == 0
    tuned = json.loads(capsys.readouterr().out)
    for weight in ("0.0", "0.5", "1.0"):
        expected = evaluate_run(data.qrels, interpolate(first, reranked, 3, float(weight)), ("ndcg@10", "recall@100"))
        assert tuned["weights"]["bm25"][weight] == pytest.approx(expected)
    scores = {w: m["ndcg@10"] for w, m in tuned["weights"]["bm25"].items()}
    assert tuned["best_weight"]["bm25"] == float(max(scores, key=scores.get))
    assert script.main([*common, "--tuned", str(tmp_path / "tuned.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    name = f"bm25 interpolated ({tuned['best_weight']['bm25']:g})"
    assert set(report["scores"]) == {"bm25 first stage", "bm25 re-ranked", name}
    assert report["scores"][name]["ndcg@10"] == pytest.approx(scores[str(tuned["best_weight"]["bm25"])])
    assert script.main([*common, "--pipeline", "bad-spec"]) == 2
    assert "write NAME=FIRST_STAGE_RUN,RERANKED_RUN" in capsys.readouterr().err


def test_embedding_experiments_save_runs_that_compare_runs_tests(small_beir, tiny_embedder, tmp_path, capsys):
    experiments, compare = load_script("embedding_experiments"), load_script("compare_runs")
    output = tmp_path / "emb"
    argv = ["--data", str(small_beir), "--output", str(output), "--dense", f"tiny={tiny_embedder[1]}", "--k", "50"]
    assert experiments.main([*argv, "--save-runs", "--no-progress"]) == 0
    results = json.loads((output / "results.json").read_text())["results"]["debian"]
    data = load_beir(small_beir, "test")
    runs = {system: output / "runs" / "debian" / f"{system.replace(':', '-')}.trec" for system in results}
    assert sorted(runs) == ["bm25", "dense:tiny", "hybrid:tiny"]
    for system, path in runs.items():  # each saved run gives back the metrics recorded for it
        assert evaluate_run(data.qrels, read_trec_run(path), ("ndcg@10", "recall@100")) == pytest.approx(
            {m: results[system]["metrics"][m] for m in ("ndcg@10", "recall@100")}
        )
    capsys.readouterr()
    specs = [arg for system, path in runs.items() for arg in ("--run", f"{system}={path}")]
    assert compare.main(["--data", str(small_beir), *specs]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 12 and set(report["scores"]) == set(runs)
    assert report["scores"]["bm25"]["ndcg@10"] == pytest.approx(results["bm25"]["metrics"]["ndcg@10"])
    assert report["p_values"]["dense:tiny"]["bm25"] == report["p_values"]["bm25"]["dense:tiny"]
    assert compare.main(["--data", str(small_beir), "--run", f"a={runs['bm25']}", "--run", f"a={runs['bm25']}"]) == 2
    assert "run names must differ" in capsys.readouterr().err
    assert compare.main(["--data", str(small_beir), "--run", f"a={runs['bm25']}"]) == 2
    assert capsys.readouterr().err.strip() == "error: give at least two runs, each as --run NAME=TREC_RUN"
    missing = tmp_path / "no-such-model"
    assert experiments.main([*argv, "--dense", f"gone={missing}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: embedding model {missing} does not exist; pass a SentenceTransformer folder or a Hub id"
    )


def test_exact_search_is_brute_force_cosine(tiny_embedder, small_split):
    model = SentenceTransformer(str(tiny_embedder[1]))
    doc_ids = list(small_split.corpus)
    documents = model.encode([small_split.document_text(d) for d in doc_ids], normalize_embeddings=True)
    query_ids = list(small_split.queries)
    queries = model.encode([small_split.queries[q] for q in query_ids], normalize_embeddings=True)
    run = exact_search(doc_ids, documents, query_ids, queries, k=5)
    similarities = queries @ documents.T
    for row, query_id in enumerate(query_ids):
        expected = [doc_ids[i] for i in np.argsort(-similarities[row], kind="stable")[:5]]
        assert list(run[query_id]) == expected
        assert list(run[query_id].values()) == pytest.approx(sorted(similarities[row], reverse=True)[:5], abs=1e-5)


def test_dense_first_stage_caches_document_embeddings(tiny_embedder, small_split, tmp_path):
    stage = DenseFirstStage(str(tiny_embedder[1]), cache_folder=tmp_path)
    first = stage.retrieve(small_split, 50)
    assert first.details["documents_per_s"] > 0 and first.source.startswith(f"dense:{tiny_embedder[1]}@")
    second = DenseFirstStage(str(tiny_embedder[1]), cache_folder=tmp_path).retrieve(small_split, 50)
    assert second.details == {"document_embeddings": "cached"}
    assert second.run == first.run
    assert all(len(ranking) == 50 for ranking in first.run.values())


def test_an_interrupted_chunked_encoding_resumes_from_its_last_finished_chunk(tmp_path):
    texts = [f"text {i}" for i in range(7)]
    calls: list[list[str]] = []
    interrupted: list[bool] = []

    def encode(chunk: list[str]) -> dict[str, np.ndarray]:
        calls.append(chunk)
        if chunk == texts[3:6] and not interrupted:  # the second chunk, the first time only
            interrupted.append(True)
            raise KeyboardInterrupt
        return {"values": np.array([[float(t.split()[1]), len(t)] for t in chunk], dtype=np.float32)}

    with pytest.raises(KeyboardInterrupt):
        encode_in_chunks(texts, encode, tmp_path / "cache", chunk_size=3)
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["chunk-00000.safetensors"]
    calls.clear()
    resumed = encode_in_chunks(texts, encode, tmp_path / "cache", chunk_size=3)
    assert calls == [texts[3:6], texts[6:]] and resumed.encoded == 4
    expected = encode_in_chunks(texts, encode, None, chunk_size=3).arrays["values"]
    np.testing.assert_array_equal(resumed.arrays["values"], expected)
    np.testing.assert_array_equal(expected[:, 0], np.arange(7))


def test_hybrid_retrieves_the_fusion_of_its_two_runs(tiny_embedder, small_split):
    dense = DenseFirstStage(str(tiny_embedder[1]))
    hybrid = HybridFirstStage(dense, dense_weight=0.3).retrieve(small_split, 40)
    expected = fuse_runs(
        [dense.retrieve(small_split, 40).run, BM25FirstStage().retrieve(small_split, 40).run], [0.3, 0.7], 40
    )
    assert hybrid.run == expected
    assert hybrid.source.startswith("hybrid:0.3:dense:")


def test_first_stages_side_by_side(tiny_embedder, small_split):
    dense = DenseFirstStage(str(tiny_embedder[1]))
    table = evaluate_first_stages(small_split, {"bm25": BM25FirstStage(), "dense": dense}, k=100)
    expected = evaluate_run(small_split.qrels, dense.retrieve(small_split, 100).run, ("ndcg@10", "recall@100"))
    assert table["dense"]["metrics"] == pytest.approx(expected)
    assert table["bm25"]["source"] == "bm25" and table["dense"]["ms_per_query"] > 0


def test_evaluate_with_a_hybrid_first_stage(tiny_embedder, small_beir):
    config = EvaluationConfig(
        data=[str(small_beir)],
        models=["bm25", f"ce:{tiny_embedder[0]}"],
        depth=5,
        first_stage_k=50,
        max_queries=6,
        first_stage=f"hybrid:{tiny_embedder[1]}",
        progress=False,
    )
    report = evaluate(config)
    assert set(report["results"]) == {"hybrid", "bert-ce"}
    assert report["settings"]["first_stage"].startswith("hybrid: 0.5 x dense")
    assert report["datasets"]["debian"]["first_stage"].startswith("hybrid:0.5:dense:")
    assert report["results"]["hybrid"]["debian"]["metrics"]["recall@100"] >= 0


def test_evaluate_interpolated_with_the_first_stage(tiny_embedder, small_beir, tmp_path):
    """Weight 1 gives back the first stage's ranking, weight 0 the model's; in between, ranking_data.fusion's."""
    model = f"ce:{tiny_embedder[0]}"
    base = dict(data=[str(small_beir)], models=[model], depth=5, max_queries=6, progress=False)
    plain = evaluate(EvaluationConfig(**base, runs_folder=str(tmp_path / "plain")))
    reports = {w: evaluate(EvaluationConfig(**base, interpolate=w)) for w in (0.0, 0.5, 1.0)}
    metrics = {w: report["results"]["bert-ce"]["debian"]["metrics"] for w, report in reports.items()}
    assert metrics[1.0] == pytest.approx(plain["results"]["bm25"]["debian"]["metrics"])
    assert metrics[0.0] == pytest.approx(plain["results"]["bert-ce"]["debian"]["metrics"])
    first = read_trec_run(tmp_path / "plain" / "debian" / "bm25.trec")
    reranked = read_trec_run(tmp_path / "plain" / "debian" / "bert-ce.trec")
    data = subsample_queries(load_beir(small_beir, "test"), 6, 0)
    expected = evaluate_run(data.qrels, interpolate(first, reranked, 5, 0.5), tuple(metrics[0.5]))
    assert metrics[0.5] == pytest.approx(expected, abs=1e-6)
    assert reports[0.5]["settings"]["interpolate"] == 0.5
    assert "interpolated with the first stage (weight 0.5)" in markdown_report(reports[0.5])
    with pytest.raises(ValueError, match=r"interpolate must lie in \[0, 1\], got 2"):
        EvaluationConfig(**base, interpolate=2.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dense", "unknown first stage 'dense'"),
        ("bm25:x", "unknown first stage"),
        ("sparse:x", "unknown first stage"),
        ("dense:/no/such/folder", "does not exist"),
    ],
)
def test_bad_first_stage_specs_are_refused_clearly(spec, message):
    with pytest.raises(FirstStageError, match=message):
        first_stage_from_spec(spec)


def test_a_cross_encoder_is_not_an_embedding_model(tiny_embedder):
    with pytest.raises(FirstStageError, match="is a cross-encoder, not an embedding model"):
        first_stage_from_spec(f"dense:{tiny_embedder[0]}")


def test_evaluate_script_reports_a_bad_first_stage_in_one_line(tiny_embedder, sample_data, tmp_path, capsys):
    evaluate_script = load_script("evaluate")
    code = evaluate_script.main(
        ["--data", str(sample_data), "--first-stage", f"hybrid:{tiny_embedder[0]}", "--json", str(tmp_path / "e.json")]
    )
    error, hint = capsys.readouterr().err.strip().split("\n")  # the mice command's form: one error line, one hint
    assert code == 2 and "is a cross-encoder, not an embedding model" in error
    assert error.startswith("error: ") and hint.startswith("hint: ")


def test_evaluate_script_takes_a_dense_first_stage(tiny_embedder, small_beir, tmp_path):
    evaluate_script = load_script("evaluate")
    output = tmp_path / "e.json"
    argv = ["--data", str(small_beir), "--first-stage", f"dense:{tiny_embedder[1]}", "--max-queries", "5"]
    assert evaluate_script.main([*argv, "--json", str(output), "--no-progress"]) == 0
    report = json.loads(output.read_text())
    assert list(report["results"]) == ["dense"]
    assert report["datasets"]["debian"]["first_stage_details"]["documents_per_s"] > 0
