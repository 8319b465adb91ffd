"""Cards rendered from recorded runs: every figure traces to training_record.json / evaluation.json / the data."""

from __future__ import annotations

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from tiny_models import build_tiny_backbone
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hub_cards import (
    RecordError,
    read_teacher_dataset,
    render_dataset_card,
    render_model_card,
    render_space_card,
)
from hub_cards.render import main as render_main
from modeling_mice import MiceForSequenceClassification
from ranking_data.teacher_data import TeacherDataset

# As the trainer records an objective: its name, weight, configuration and BibTeX (the loss's `citation`).
MARGIN_MSE_CITATION = "@misc{hofstaetter2020improving,\n    title={Improving Efficient Neural Ranking Models},\n    eprint={2010.02666}\n}"
OBJECTIVES = [
    {
        "name": "MarginMSELoss",
        "weight": 1.0,
        "config": {"activation_fn": "torch.nn.modules.linear.Identity"},
        "citation": MARGIN_MSE_CITATION,
    }
]
HYPERPARAMETERS = {"max_steps": 20, "learning_rate": 7e-6, "per_device_train_batch_size": 4, "seed": 12}


def training_record(model_type: str, backbone: str, **extra) -> dict:
    """A record laid out as docs/design.md says the trainer writes it, with figures taken from `model`."""
    return {
        "model_type": model_type,
        "backbone": backbone,
        "objectives": OBJECTIVES,
        "teacher": {"name": "bm25+minilm", "description": "min-max BM25 plus all-MiniLM-L6-v2 cosine"},
        "data": {"dataset": "debian-sample", "train_queries": 40, "list_size": 4},
        "hyperparameters": HYPERPARAMETERS,
        "train_runtime_s": 3.25,
        "final_train_loss": 0.0625,
        **extra,
    }


def make_mice_folder(parent: Path, name: str = "mice", record_parameters: bool = True) -> tuple[Path, torch.nn.Module]:
    """A tiny MICE-ℓ1+2 (of a 4-layer BERT) saved like a training output: weights, remote code, tokenizer, record."""
    backbone = build_tiny_backbone(parent / "backbones", "bert", num_hidden_layers=4)
    model = MiceForSequenceClassification.from_backbone(str(backbone), fusion_layer=1, interaction_layers=2).eval()
    folder = parent / name
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(backbone)).save_pretrained(folder)
    extra = {"fusion_layer": 1, "interaction_layers": 2, "dropped_layers": model.config.dropped_layers}
    if record_parameters:
        extra["num_parameters"] = model.num_parameters()
    record = training_record("mice", str(backbone), **extra)
    (folder / "training_record.json").write_text(json.dumps(record), encoding="utf-8")
    return folder, model


def make_cross_encoder_folder(parent: Path, backbone: str, name: str = "cross-encoder") -> Path:
    """A tiny BERT cross-encoder with `backbone`'s tokenizer, saved like a training output."""
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        max_position_embeddings=128,
    )
    model = BertForSequenceClassification(config).eval()
    folder = parent / name
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record = training_record("cross-encoder", backbone, num_parameters=model.num_parameters())
    (folder / "training_record.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def write_evaluation(path: Path, systems: dict[str, tuple[str | None, dict]], better_than: dict | None = None) -> dict:
    """An evaluation.json in the layout `evaluation.harness.evaluate_systems` writes; `systems` maps a name to its
    model path (None for the first stage) and its entry on the dataset `debian`."""
    report = {
        "settings": {"split": "test", "depth": 30, "first_stage": "bm25", "seed": 0},
        "systems": {
            name: {"kind": "first-stage"} if model is None else {"kind": name.split("-")[0], "model": model}
            for name, (model, _) in systems.items()
        },
        "datasets": {"debian": {"split": "test", "queries": 60, "documents": 3000}},
        "results": {name: {"debian": entry} for name, (_, entry) in systems.items()},
        "significance": {
            "debian": {"test": "paired t-test", "max_p": 0.05, "p_values": {}, "better_than": better_than or {}}
        },
    }
    path.write_text(json.dumps(report), encoding="utf-8")
    return report


def metrics(ndcg: float, mrr: float, recall: float, map_: float, **latency) -> dict:
    """A result entry: the four metrics, and `latency` (ms) when given."""
    entry: dict = {"metrics": {"ndcg@10": ndcg, "mrr@10": mrr, "recall@100": recall, "map": map_}}
    if latency:
        entry["latency"] = latency
    return entry


def python_blocks(card: ModelCard, after: str) -> str:
    """The first ```python block after the heading `after`."""
    section = card.text.split(after, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    """The quickstart layout: models/mice, models/cross-encoder (same backbone) and evaluation.json two levels up."""
    root = tmp_path_factory.mktemp("quickstart")
    mice_folder, _ = make_mice_folder(root / "models")
    backbone = json.loads((mice_folder / "training_record.json").read_text())["backbone"]
    make_cross_encoder_folder(root / "models", backbone)
    mice = metrics(0.625, 0.5, 0.875, 0.4375, mean_ms=3.5, p95_ms=4.0)
    mice["document_encoding"] = {"seconds": 1.5, "documents": 3000, "ms_per_document": 0.5}
    write_evaluation(
        root / "evaluation.json",
        {
            "bm25": (None, metrics(0.5, 0.25, 0.875, 0.375)),
            "mice": ("models/mice", mice),
            "cross-encoder": ("models/cross-encoder", metrics(0.75, 0.625, 0.875, 0.5, mean_ms=7.25, p95_ms=9.0)),
        },
        better_than={"mice": {"ndcg@10": ["bm25"], "mrr@10": ["bm25"]}, "cross-encoder": {"ndcg@10": ["bm25"]}},
    )
    return root


def test_model_card_eval_results_are_the_recorded_ones(quickstart):
    card = render_model_card(quickstart / "models" / "mice", repo_id="org/mice-tiny")
    recorded = json.loads((quickstart / "evaluation.json").read_text())["results"]["mice"]["debian"]["metrics"]
    found = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert found == {("debian", m): v for m, v in recorded.items()}
    assert {r.task_type for r in card.data.eval_results} == {"text-ranking"}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    # The readable table holds every system, this one marked; figures are the recorded ones to 4 decimals.
    assert (
        "| Dataset | Queries | System | Training budget | ndcg@10 | mrr@10 | recall@100 | map "
        "| Significantly better than (p < 0.05) |" in (card.text)
    )
    # Every system states its training budget, read from its own training record.
    budget = "20 steps × 4 queries × 4 documents, 3 s"
    assert (
        f"| debian | 60 | **mice (this model)** | {budget} | 0.6250 | 0.5000 | 0.8750 | 0.4375 | bm25 (ndcg@10, mrr@10) |"
        in (card.text)
    )
    assert "| debian | 60 | bm25 | no training | 0.5000 | 0.2500 | 0.8750 | 0.3750 | – |" in card.text
    assert (
        f"| debian | 60 | cross-encoder | {budget} | 0.7500 | 0.6250 | 0.8750 | 0.5000 | bm25 (ndcg@10) |" in card.text
    )


def test_model_card_latency_names_the_same_backbone_cross_encoder(quickstart):
    card = render_model_card(quickstart / "models" / "mice")
    assert "| Dataset | System | Role | mean_ms | p95_ms | document encoding, ms per document (once) |" in card.text
    assert "| debian | mice | this model | 3.50 | 4.00 | 0.50 |" in card.text
    assert "| debian | cross-encoder | same-backbone cross-encoder | 7.25 | 9.00 | – |" in card.text


def test_evaluation_copied_into_the_model_folder_finds_both_systems(quickstart, tmp_path):
    """The quickstart records model paths relative to where it ran and copies evaluation.json into each model."""
    output = tmp_path / "run" / "mice-quickstart"
    shutil.copytree(quickstart / "models", output / "models")
    report = json.loads((quickstart / "evaluation.json").read_text())
    for name in ("mice", "cross-encoder"):
        report["systems"][name]["model"] = f"mice-quickstart/models/{name}"
    for name in ("mice", "cross-encoder"):
        (output / "models" / name / "evaluation.json").write_text(json.dumps(report))
    card = render_model_card(output / "models" / "mice")
    assert [r.metric_value for r in card.data.eval_results] == [0.625, 0.5, 0.875, 0.4375]
    assert "| debian | cross-encoder | same-backbone cross-encoder | 7.25 | 9.00 | – |" in card.text


def test_mice_card_architecture_training_and_citations(quickstart):
    folder = quickstart / "models" / "mice"
    record = json.loads((folder / "training_record.json").read_text())
    card = render_model_card(folder)
    assert "| Name in the paper | MICE-ℓ1+2 |" in card.text
    assert "| Independent layers (query and document apart) | 0 (1 layer) |" in card.text
    assert "| Interaction layers (query tokens attend to frozen document states) | 1–2 (2 layers) |" in card.text
    assert "| Dropped backbone layers | 3 |" in card.text
    count = record["num_parameters"]
    assert f"| Parameters | {count / 1e6:.1f}M ({count:,}; from the training record) |" in card.text
    assert "| learning_rate | 7e-06 |" in card.text and "| train_queries | 40 |" in card.text
    assert "**MarginMSELoss** (weight 1.0)" in card.text
    assert "Training took 3.2 s." in card.text and "The final training loss was 0.0625." in card.text
    for arxiv in ("2602.16299", "2603.03010", "2010.02666"):
        assert f"eprint={{{arxiv}}}" in card.text
    assert "trust_remote_code=True" in card.text and 'revision="<commit hash>"' in card.text
    assert "code_revision" in card.text
    assert card.data.tags and "custom_code" in card.data.tags and card.data.pipeline_tag == "text-ranking"


def test_card_reads_the_record_the_trainer_writes(tmp_path):
    """The record comes from trainers.training_record (what scripts/train.py writes), not from a hand-made dict."""
    from sentence_transformers import CrossEncoder

    from trainers import DistillationTrainingArguments, MarginMSELoss, find_mice_model, freeze_independent_layers
    from trainers.training_record import build_training_record, write_training_record

    folder, _ = make_mice_folder(tmp_path)
    model = CrossEncoder(str(folder), trust_remote_code=True)
    args = DistillationTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=2)
    teacher = {"name": "hybrid", "description": "BM25 plus MiniLM cosine"}
    data = {"dataset": "teacher_dataset", "train_queries": 2, "list_size": 2}
    record = build_training_record(
        model, MarginMSELoss(model), args, backbone="org/backbone", teacher=teacher, data=data, train_runtime_s=1.5
    )
    write_training_record(folder, record)
    card = render_model_card(folder)
    assert card.data.base_model == "org/backbone"
    assert "| Name in the paper | MICE-ℓ1+2 |" in card.text and "| Dropped backbone layers | 3 |" in card.text
    count = record["num_parameters"]
    assert f"| Parameters | {count / 1e6:.1f}M ({count:,}; from the training record) |" in card.text
    for key, value in record["hyperparameters"].items():
        assert f"| {key} | {value} |" in card.text
    assert "**MarginMSELoss** (weight 1.0)" in card.text and "**Teacher:** hybrid. BM25 plus MiniLM cosine" in card.text
    assert "Training took 1.5 s." in card.text and "final training loss" not in card.text
    assert "Trained parameters" not in card.text

    frozen = freeze_independent_layers(find_mice_model(model))
    record = build_training_record(
        model, MarginMSELoss(model), args, backbone="org/backbone", teacher=teacher, data=data
    )
    write_training_record(folder, record)
    trained = count - frozen
    assert (
        f"| Trained parameters | {trained / 1e6:.1f}M ({trained:,}) (the independent layers and embeddings were "
        in (render_model_card(folder).text)
    )


def test_parameter_count_falls_back_to_the_safetensors_weights(tmp_path):
    folder, model = make_mice_folder(tmp_path, record_parameters=False)
    card = render_model_card(folder)
    count = sum(p.numel() for p in model.state_dict().values())
    assert f"({count:,}; from the safetensors weights)" in card.text


def test_card_without_evaluation_says_so_and_has_no_model_index(tmp_path):
    folder, _ = make_mice_folder(tmp_path)
    card = render_model_card(folder)
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "No evaluation was recorded for this model" in card.text
    assert "No latency was recorded for this model." in card.text


def test_model_not_among_evaluated_systems_gets_no_results(quickstart, tmp_path):
    folder, _ = make_mice_folder(tmp_path, name="other")
    card = render_model_card(folder, evaluation=quickstart / "evaluation.json")
    assert card.data.eval_results is None
    assert "this model folder is not among the evaluated systems" in card.text


def test_bench_latency_file_is_tabulated(quickstart, tmp_path):
    bench = tmp_path / "latency.json"
    measured = {"ce_ms": 80.0, "mice_ms": 40.0, "mice_cached_ms": 20.0, "st_ce_ms": 82.5, "speedup": 2.0}
    measured |= {"speedup_cached": 4.0, "ce_gflop": 10.0, "mice_cached_gflop": 2.5, "ce_gflops": 125.0}
    bench.write_text(json.dumps({**measured, "docs": 100, "doc_tokens": 258, "threads": 2}))
    card = render_model_card(quickstart / "models" / "mice", latency=bench)
    assert "| cross-encoder (joint pairs) | 80.00 | 1.00 | 10.00 | 125.00 |" in card.text
    assert "| MICE, documents encoded per query | 40.00 | 2.00 | – | – |" in card.text
    assert "| MICE, pre-encoded documents | 20.00 | 4.00 | 2.50 | – |" in card.text
    assert "| sentence-transformers CrossEncoder.predict | 82.50 | – | – | – |" in card.text
    assert "| docs | 100 |" in card.text and "| doc_tokens | 258 |" in card.text


def test_record_that_does_not_match_the_weights_is_refused(tmp_path):
    folder, _ = make_mice_folder(tmp_path)
    record = json.loads((folder / "training_record.json").read_text())
    (folder / "training_record.json").write_text(json.dumps({**record, "fusion_layer": 2, "interaction_layers": 1}))
    with pytest.raises(RecordError, match="says MICE-ℓ2\\+1 but config.json says MICE-ℓ1\\+2"):
        render_model_card(folder)


def test_record_errors_are_clear(tmp_path):
    with pytest.raises(RecordError, match="training record not found"):
        render_model_card(tmp_path)
    (tmp_path / "training_record.json").write_text(json.dumps({"model_type": "colbert"}))
    with pytest.raises(RecordError, match="model_type must be 'mice' or 'cross-encoder'"):
        render_model_card(tmp_path)


def test_usage_snippets_run_and_pre_encoded_scores_match_joint_pairs(tmp_path):
    """The card's snippets, pointed at the local folder, run as written; the pre-encoded path scores the same
    documents as the joint-pair path."""
    folder, _ = make_mice_folder(tmp_path)
    card = render_model_card(folder, repo_id=str(folder))
    joint, pre_encoded, cross_encoder = {}, {}, {}
    exec(python_blocks(card, "### Transformers"), joint)
    exec(python_blocks(card, "### Pre-encoded documents"), pre_encoded)
    exec(python_blocks(card, "### Sentence Transformers"), cross_encoder)
    assert joint["scores"].shape == (2,)
    torch.testing.assert_close(pre_encoded["scores"], joint["scores"], rtol=0, atol=1e-5)
    torch.testing.assert_close(pre_encoded["best"], joint["scores"][:1], rtol=0, atol=1e-5)
    ranked = cross_encoder["ranking"]
    assert sorted(r["corpus_id"] for r in ranked) == [0, 1]


def test_render_cli_writes_a_loadable_card(quickstart, tmp_path):
    output = tmp_path / "examples" / "README.md"
    assert render_main([str(quickstart / "models" / "mice"), "--output", str(output)]) == 0
    loaded = ModelCard.load(output)
    assert [r.metric_value for r in loaded.data.eval_results] == [0.625, 0.5, 0.875, 0.4375]


def teacher_dataset() -> TeacherDataset:
    return TeacherDataset.from_records(
        [
            {"query_id": "q1", "document_ids": ["d1", "d2", "d3"], "scores": [2.5, 1.0, -0.5], "labels": [1, 0, 0]},
            {"query_id": "q2", "document_ids": ["d3", "d1"], "scores": [0.75, 0.25], "labels": [1, 1]},
        ],
        queries={"q1": "mount an iso image", "q2": "terminal text editor"},
        documents={"d1": "mount -o loop image.iso /mnt", "d2": "a loop device", "d3": "nano is a text editor"},
        metadata={
            "teacher": {"name": "hybrid", "description": "BM25 plus MiniLM cosine", "normalization": "minmax"},
            "candidates": {"description": "BM25 top-3 with the judged positives kept", "depth": 3},
            "source": "debian-sample",
            "license": "other",
        },
    )


def test_dataset_card_schema_counts_teacher_and_licence(tmp_path):
    data = teacher_dataset()
    data.save_to_disk(tmp_path / "teacher")
    card = render_dataset_card(read_teacher_dataset(tmp_path / "teacher"), repo_id="org/teacher")
    assert card.data.license == "other" and card.data.size_categories == "n<1K"
    assert "| training queries (rows of `train`) | 2 |" in card.text
    assert "| documents | 3 |" in card.text and "| scored candidates | 5 |" in card.text
    assert "| candidates per query (min / mean / max) | 2 / 2.5 / 3 |" in card.text
    assert "Relevant documents (label > 0) per query, min / mean / max: 1 / 1.5 / 2." in card.text
    for column, feature in data.train.features.items():
        assert f"| `{column}` | `{feature}` |" in card.text
    assert "**Teacher:** hybrid. BM25 plus MiniLM cosine" in card.text
    assert "**How candidates were generated:** BM25 top-3 with the judged positives kept" in card.text
    assert 'load_dataset("org/teacher", "queries", split="train")' in card.text


def test_dataset_card_without_teacher_metadata_says_so(tmp_path):
    data = teacher_dataset()
    data.metadata = {}
    data.save_to_disk(tmp_path / "teacher")
    card = render_dataset_card(read_teacher_dataset(tmp_path / "teacher"))
    assert "No teacher was recorded for this dataset." in card.text
    assert "How the candidates were generated was not recorded." in card.text
    assert "No licence was recorded for this dataset." in card.text


def test_space_card_metadata():
    card = render_space_card(models=["org/mice", "org/cross-encoder"])
    assert card.data.sdk == "gradio" and card.data.sdk_version == version("gradio")
    assert card.data.models == ["org/mice", "org/cross-encoder"] and card.data.app_file == "app.py"
    assert len(card.data.short_description) <= 60
