"""MTEB and sentence-transformers' re-ranking evaluators on a local BEIR folder, offline, checked against our harness:
on the same candidates, with one relevant document per query (the Debian known-item sample), they compute the same
nDCG@10 and MRR@10 as ``evaluation.harness`` + ir-measures."""

from __future__ import annotations

import json

import pytest
from test_evaluation import build_tiny_rerankers, one_torch_thread  # noqa: F401  (autouse fixture)

from evaluation.harness import EvaluationConfig, bm25_first_stage, evaluate, rerank
from evaluation.metrics import evaluate_run
from evaluation.mteb_task import (
    beir_reranking_task,
    evaluate_with_mteb,
    mteb_cross_encoder,
    reranking_evaluator,
    write_nanobeir_folder,
)
from evaluation.rerankers import CrossEncoderReranker, ModelPathError
from ranking_data.beir import load_beir, subsample_queries

DEPTH = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_data):
    cross_encoder, mice = build_tiny_rerankers(tmp_path_factory.mktemp("models"))
    data = subsample_queries(load_beir(sample_data, "test"), 10, seed=5)
    candidates, _ = bm25_first_stage(data, k=DEPTH)
    ours = rerank(CrossEncoderReranker(str(cross_encoder)), data, candidates, DEPTH, show_progress=False).run
    return cross_encoder, mice, data, candidates, evaluate_run(data.qrels, ours)


def test_mteb_local_task_agrees_with_the_harness_and_stores_results(setup, tmp_path):
    cross_encoder, mice, data, candidates, ours = setup
    assert all(len(judged) == 1 for judged in data.qrels.values())  # the premise of the equivalence
    task = beir_reranking_task(data, candidates, DEPTH)
    scores = evaluate_with_mteb(mteb_cross_encoder(str(cross_encoder)), task, tmp_path / "mteb")
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert scores["mrr_at_10"] == pytest.approx(ours["mrr@10"], abs=1e-4)

    stored = list((tmp_path / "mteb").rglob(f"{task.metadata.name}.json"))
    assert len(stored) == 1 and "local__bert-ce" in str(stored[0])
    saved = json.loads(stored[0].read_text())
    assert saved["scores"]["test"][0]["ndcg_at_10"] == pytest.approx(scores["ndcg_at_10"])

    # MICE runs through MTEB's CrossEncoderWrapper too (it splits the joint pairs itself).
    mice_scores = evaluate_with_mteb(mteb_cross_encoder(str(mice)), task, tmp_path / "mteb")
    assert 0.0 <= mice_scores["ndcg_at_10"] <= 1.0
    assert list((tmp_path / "mteb").rglob("local__mice"))


def test_sentence_transformers_evaluators_agree_with_the_harness(setup, tmp_path):
    cross_encoder, _, data, candidates, ours = setup
    model = CrossEncoderReranker(str(cross_encoder)).model
    evaluator = reranking_evaluator(data, candidates, DEPTH)
    results = evaluator(model)
    assert results[f"{data.name}_ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert results[f"{data.name}_mrr@10"] == pytest.approx(ours["mrr@10"], abs=1e-4)

    from sentence_transformers.cross_encoder.evaluation import CrossEncoderNanoBEIREvaluator

    folder = write_nanobeir_folder({"scifact": (data, candidates)}, tmp_path / "nano")
    nano = CrossEncoderNanoBEIREvaluator(
        dataset_names=["scifact"], dataset_id=str(folder), rerank_k=DEPTH, always_rerank_positives=False
    )
    nano_results = nano(model)
    assert nano_results[f"NanoSciFact_R{DEPTH}_ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert nano_results[f"NanoSciFact_R{DEPTH}_mrr@10"] == pytest.approx(ours["mrr@10"], abs=1e-4)

    with pytest.raises(ValueError, match="not a NanoBEIR dataset name"):
        write_nanobeir_folder({"debian": (data, candidates)}, tmp_path / "other")


def test_harness_runs_mteb_on_the_same_candidates(setup, sample_data, tmp_path):
    cross_encoder, _, _, _, _ = setup
    config = EvaluationConfig(
        data=[str(sample_data)], models=[f"ce:{cross_encoder}"], depth=DEPTH, max_queries=10, seed=5
    )
    config.mteb_folder = str(tmp_path)
    report = evaluate(config)
    mteb_scores = report["mteb"]["bert-ce"]["debian"]
    ours = report["results"]["bert-ce"]["debian"]["metrics"]
    assert mteb_scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert mteb_scores["map_at_10"] <= ours["map"] + 1e-6  # MAP@10 counts only the top 10 of a deeper run
    assert list(tmp_path.rglob("local__bert-ce"))


def test_mteb_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(ModelPathError, match="does not exist"):
        mteb_cross_encoder(str(tmp_path / "missing"))
