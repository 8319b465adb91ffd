"""The main job end to end on a tiny collection and a tiny backbone: outputs, records, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import build_tiny_backbone

from evaluation.metrics import evaluate_run
from mice_rerank import quickstart
from ranking_data.beir import load_beir, read_trec_run
from ranking_data.fusion import interpolate
from ranking_data.work_folders import WorkFolderError

# Small enough to run in seconds; the real preset only changes sizes.
TINY = dict(
    candidates=5,
    list_size=2,  # every tiny list holds at least the positive and one BM25 candidate
    batch_size=2,
    cross_encoder_steps=2,
    conversion_queries=5,
    conversion_held_out=1,
    conversion_steps=3,
    embedder_steps=2,
    embedder_batch_size=2,
    warmup_steps=0,
    max_query_length=16,
    max_document_length=32,
    fusion_layer=2,
    interaction_layers=2,
    eval_depth=5,
    latency_depths=(2, 4),
    latency_queries=2,
)


@pytest.fixture(scope="module")
def tiny_collection(sample_data, tmp_path_factory):
    """A BEIR folder cut from the packaged sample: 6 train, 3 dev and 4 test queries, their documents and siblings."""
    folder = tmp_path_factory.mktemp("tiny-collection")
    splits = {"train": 6, "dev": 3, "test": 4}
    qrels = {split: dict(list(load_beir(sample_data, split).qrels.items())[:n]) for split, n in splits.items()}
    full = load_beir(sample_data, "test")
    judged = {doc for split in qrels.values() for judgements in split.values() for doc in judgements}
    documents = sorted(judged | set(list(full.corpus)[:30]))
    (folder / "qrels").mkdir()
    with (folder / "corpus.jsonl").open("w") as handle:
        for doc_id in documents:
            handle.write(json.dumps({"_id": doc_id, **full.corpus[doc_id]}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for split in qrels.values():
            for query_id in split:
                handle.write(json.dumps({"_id": query_id, "text": full.all_queries[query_id]}) + "\n")
    for split, judgements in qrels.items():
        lines = [f"{q}\t{d}\t{g}" for q, docs in judgements.items() for d, g in docs.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return folder


@pytest.mark.real_model  # the offline teacher embeds with the packaged MiniLM
def test_quickstart_writes_models_evaluation_and_report_then_resumes(tiny_collection, tmp_path, monkeypatch):
    backbone = str(build_tiny_backbone(tmp_path, "bert", num_hidden_layers=4))
    # all-MiniLM-L6-v2 is wider than the tiny backbone: a dual encoder of the tiny width stands in as the teacher
    # of the light dual encoder's embeddings.
    embedding_teacher = str(build_tiny_backbone(tmp_path / "embedding-teacher", "bert", num_hidden_layers=1))
    monkeypatch.setattr(quickstart, "embedding_teacher_for", lambda cross_encoder: embedding_teacher)
    output = tmp_path / "quickstart"
    report = quickstart.run_quickstart(output, "cpu", data=tiny_collection, backbone=backbone, **TINY)

    evaluation = json.loads((output / "evaluation.json").read_text())
    assert set(evaluation["results"]) == {"bm25", "cross-encoder", "mice", "teacher"}
    assert evaluation["settings"]["depth"] == TINY["eval_depth"]
    test_queries = len(load_beir(tiny_collection, "test").queries)
    assert evaluation["datasets"][tiny_collection.name]["queries"] == test_queries
    models = output / "models"
    record = json.loads((models / "cross-encoder" / "training_record.json").read_text())
    assert record["model_type"] == "cross-encoder"
    assert [o["name"] for o in record["objectives"]] == ["MarginMSELoss", "InfoNCELoss"]
    assert record["objectives"][1]["config"]["scale"] == 5.0
    assert record["hyperparameters"]["max_steps"] == TINY["cross_encoder_steps"]
    assert (record["hyperparameters"]["dropout"], record["hyperparameters"]["max_grad_norm"]) == (0.0, 0.0)
    assert "dev" not in record["data"]  # the cpu preset spends no time on dev losses
    # MICE is converted from that cross-encoder, with the preset's layers and steps, and ranks as a MICE model.
    conversion = json.loads((models / "mice" / "conversion.json").read_text())
    assert Path(conversion["parent"]) == models / "cross-encoder"
    assert conversion["settings"]["held_out_queries"] == 1
    assert sorted(path.name for path in (models / "mice").iterdir() if path.is_dir()) == []  # no work folder left
    assert (conversion["fusion_layer"], conversion["interaction_layers"]) == (2, 2)
    assert evaluation["systems"]["mice"]["kind"] == "mice"
    assert evaluation["systems"]["teacher"]["kind"] == "teacher"
    for kind in ("cross-encoder", "mice"):  # the model cards read the figures from the model folder
        assert json.loads((models / kind / "evaluation.json").read_text()) == evaluation
    assert sorted(path.stem for path in (output / "steps").glob("*.json")) == [
        "compare-first-stages",
        "convert-mice",
        "distill-embedder",
        "evaluate",
        "evaluate-pipeline",
        "teacher-train",
        "train-cross-encoder",
    ]
    # The light dual encoder learnt from the scores the conversion kept, and is a two-layer SentenceTransformer.
    embedder = json.loads((models / "embedder" / "embedder_record.json").read_text())
    assert embedder["teacher"]["name"] == str(output / "parent_scores")
    assert (embedder["layers"], embedder["hyperparameters"]["max_steps"]) == (2, TINY["embedder_steps"])
    # Every query the cross-encoder scored (the conversion's and its held-out ones) has a labelled positive.
    assert embedder["data"]["train_rows"] == TINY["conversion_queries"] + TINY["conversion_held_out"]
    # It also learnt the embedding teacher's embeddings of those rows' texts, and its budget says so.
    assert embedder["embedding_teacher"] == embedding_teacher and embedder["data"]["embedding_texts"] > 0
    budget = json.loads((output / "steps" / "distill-embedder.json").read_text())["budget"]
    assert budget.endswith(f"with all-MiniLM-L6-v2's embeddings of their {embedder['data']['embedding_texts']} texts")
    # The first-stage step's BM25 is the evaluation's BM25, and its BM25 → MICE the evaluation's MICE: same figures.
    first = json.loads((output / "first_stages.json").read_text())
    assert list(first["systems"]) == ["bm25", "light dual encoder", "all-MiniLM-L6-v2", *quickstart.HYBRIDS]
    # all-MiniLM-L6-v2 embedded the corpus once, for the teacher data; the first-stage step read that cache.
    assert first["systems"]["all-MiniLM-L6-v2"]["document_embeddings"] == "cached"
    assert "documents_per_s" in first["systems"]["light dual encoder"]
    speed = first["encoding_speed"]
    assert sorted(speed["documents_per_s"]) == sorted(quickstart.DUAL_ENCODERS)
    assert all(len(rounds) == quickstart.SPEED_ROUNDS for rounds in speed["documents_per_s_per_round"].values())
    name = tiny_collection.name
    for metric in quickstart.FIRST_STAGE_METRICS:
        assert first["scores"]["bm25"][metric] == pytest.approx(evaluation["results"]["bm25"][name]["metrics"][metric])
    pipeline = json.loads((output / "pipeline.json").read_text())
    bm25_mice, hybrid_mice = quickstart.PIPELINES
    for metric in quickstart.FIRST_STAGE_METRICS:
        assert pipeline["scores"][bm25_mice][metric] == pytest.approx(
            evaluation["results"]["mice"][name]["metrics"][metric]
        )
    # Interpolated: the pipeline's own first stage and MICE run, combined at the fixed weight.
    first_stage = read_trec_run(output / "runs" / "bm25" / name / "bm25.trec")
    mice_run = read_trec_run(output / "runs" / "bm25" / name / "mice.trec")
    expected = interpolate(first_stage, mice_run, TINY["eval_depth"], quickstart.INTERPOLATION_WEIGHT)
    for metric in quickstart.FIRST_STAGE_METRICS:
        assert pipeline["scores"][quickstart.INTERPOLATED[0]][metric] == pytest.approx(
            evaluate_run(load_beir(tiny_collection, "test").qrels, expected, (metric,))[metric]
        )
    # MICE re-ranked the hybrid's run: its documents below the depth keep the hybrid's order.
    hybrid = read_trec_run(output / "runs" / "first-stages" / "bm25-light-dual-encoder.trec")
    reranked = read_trec_run(output / "runs" / "hybrid" / name / "mice.trec")
    for query, scores in reranked.items():
        order = sorted(scores, key=scores.get, reverse=True)
        hybrid_order = sorted(hybrid[query], key=hybrid[query].get, reverse=True)
        assert set(order[: TINY["eval_depth"]]) == set(hybrid_order[: TINY["eval_depth"]])
        assert order[TINY["eval_depth"] :] == hybrid_order[TINY["eval_depth"] :]
    for name in ("report.md", "evaluation.md", "effectiveness.png", "latency.png"):
        assert (report.parent / name).stat().st_size > 0
    # Finished steps would be skipped and reported under the new settings: another run in this folder is refused.
    with pytest.raises(WorkFolderError, match=r"holds a quickstart run with other settings \(cross_encoder_steps: "):
        quickstart.run_quickstart(
            output, "cpu", data=tiny_collection, backbone=backbone, **{**TINY, "cross_encoder_steps": 9}
        )
    markdown = report.read_text()
    bm25 = evaluation["results"]["bm25"][tiny_collection.name]["metrics"]["ndcg@10"]
    assert f"| bm25 | bm25s, no training | {bm25:.3f} |" in markdown
    ndcg = {
        system: evaluation["results"][system][tiny_collection.name]["metrics"]["ndcg@10"]
        for system in ("cross-encoder", "mice")
    }
    assert f"MICE keeps {ndcg['mice'] / ndcg['cross-encoder']:.1%} of its parent" in markdown
    # The report says plainly whether the cross-encoder beat BM25 at its budget.
    above = round(ndcg["cross-encoder"], 3) > round(bm25, 3)
    assert ("The cross-encoder is above BM25" in markdown) is above
    assert ("the cross-encoder is NOT above BM25" in markdown) is not above
    assert (
        "| mice | 3 steps × 2 queries; the cross-encoder scored 5 train queries × 5 BM25 candidates; no labels"
        in markdown
    )
    minilm = first["scores"]["all-MiniLM-L6-v2"]["ndcg@10"]
    light = first["scores"]["light dual encoder"]["ndcg@10"]
    assert f"The light dual encoder keeps {light / minilm:.1%} of all-MiniLM-L6-v2's nDCG@10" in markdown
    assert f"| bm25 | bm25s, no training | {first['scores']['bm25']['ndcg@10']:.3f} | – |" in markdown
    assert f"| {hybrid_mice} | {pipeline['scores'][hybrid_mice]['ndcg@10']:.3f} |" in markdown
    assert f"{hybrid_mice} against {bm25_mice}: ndcg@10 " in markdown
    bm25_interpolated, hybrid_interpolated = quickstart.INTERPOLATED
    assert f"{hybrid_interpolated} against {bm25_interpolated}: ndcg@10 " in markdown
    assert f"{bm25_interpolated} against {bm25_mice}: ndcg@10 " in markdown
    assert f"| {hybrid_interpolated} | {pipeline['scores'][hybrid_interpolated]['ndcg@10']:.3f} |" in markdown

    # A re-run finds every step done: nothing is rebuilt, retrained or re-evaluated.
    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    for step in (
        "build_teacher_data",
        "train_cross_encoder",
        "convert_to_mice",
        "distill_light_dual_encoder",
        "compare_first_stages",
        "evaluate",
        "evaluate_pipeline",
    ):
        monkeypatch.setattr(quickstart, step, must_not_run)
    assert quickstart.run_quickstart(output, "cpu", data=tiny_collection, backbone=backbone, **TINY) == report


def _significance(p: float) -> dict:
    return {"max_p": 0.05, "p_values": {"bm25": {"cross-encoder": {"ndcg@10": p}}}}


@pytest.mark.parametrize(
    ("cross_encoder", "bm25", "p", "expected"),
    [
        (0.880, 0.862, 0.01, "The cross-encoder is above BM25, significantly (0.880 vs 0.862, paired t-test p = 0.01)"),
        (0.872, 0.862, 0.58, "The cross-encoder is above BM25, but not significantly (0.872 vs 0.862,"),
        # 0.86194 and 0.86159 print alike: a tie at the shown precision is not "above".
        (0.86194, 0.86159, 0.99, "NOT above BM25: it is level with it (0.862 vs 0.862, paired t-test p = 0.99)"),
        (0.850, 0.862, 0.2, "NOT above BM25: it is below it (0.850 vs 0.862"),
    ],
)
def test_the_report_says_plainly_where_the_cross_encoder_stands_against_bm25(cross_encoder, bm25, p, expected):
    assert expected in quickstart.versus_bm25(cross_encoder, bm25, _significance(p))


def test_the_report_says_per_metric_whether_the_hybrid_pipeline_beats_bm25_then_mice():
    bm25_mice, hybrid_mice = quickstart.PIPELINES
    pipeline = {
        "scores": {
            bm25_mice: {"ndcg@10": 0.839, "recall@100": 0.9866},
            hybrid_mice: {"ndcg@10": 0.8294, "recall@100": 0.98664},
        },
        "p_values": {hybrid_mice: {bm25_mice: {"ndcg@10": 0.35, "recall@100": 0.01}}},
        "max_p": 0.05,
    }
    assert quickstart.versus_pipeline(pipeline, hybrid_mice, bm25_mice) == (
        f"{hybrid_mice} against {bm25_mice}: ndcg@10 below (0.829 vs 0.839, p = 0.35); "
        "recall@100 level with (0.987 vs 0.987, p = 0.01 < 0.05)."
    )


def test_the_light_dual_encoder_learns_all_minilm_embeddings_only_where_they_are_as_wide(minilm_path, tmp_path):
    # The default backbone is all-MiniLM-L6-v2 itself; a tiny backbone is 32 wide, not 384.
    assert quickstart.embedding_teacher_for(Path(minilm_path)) == minilm_path
    assert quickstart.embedding_teacher_for(build_tiny_backbone(tmp_path, "bert", cross_encoder=True)) is None
