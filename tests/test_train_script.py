"""scripts/train.py end to end on a tiny MICE: kill mid-run, resume, match an uninterrupted run; the output loads."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sentence_transformers.cross_encoder import CrossEncoder
from tiny_models import FAMILIES, build_tiny_backbone
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from trainers.batching import score_lists
from trainers.teacher_data import TeacherDataset

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"


def load_train_script():
    return importlib.import_module("trainers.train_cli")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_script():
    return load_train_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny BERT backbone (with dropout, so the RNG state matters on resume), a hand-made teacher dataset and
    ``run.yaml``, the settings of ``settings(folder, "interrupted")``."""
    folder = tmp_path_factory.mktemp("train-script")
    build_tiny_backbone(folder, "bert", num_hidden_layers=3, cross_encoder=True).rename(folder / "backbone")
    documents = {f"d{i}": f"debian package {i % 5} ships the {i} tool" for i in range(30)}
    queries = {f"q{i}": f"which package has tool {i}" for i in range(12)}
    rows = [
        {
            "query_id": f"q{i}",
            "document_ids": [f"d{(i + j) % 30}" for j in range(5)],
            "scores": [5.0 - j + 0.1 * i for j in range(5)],
            "labels": [1, 0, 0, 0, 0],
        }
        for i in range(12)
    ]
    teacher = {"name": "hand-made", "description": "scores written by the test"}
    TeacherDataset.from_records(rows, queries, documents, {"teacher": teacher}).save_to_disk(folder / "teacher")
    (folder / "run.yaml").write_text(yaml.safe_dump(settings(folder, "interrupted")), encoding="utf-8")
    return folder


def settings(workspace: Path, output: str) -> dict:
    return {
        "model_type": "mice",
        "backbone": str(workspace / "backbone"),
        "fusion_layer": 1,
        "interaction_layers": 2,
        "teacher_data": str(workspace / "teacher"),
        "objectives": ["MarginMSELoss", {"name": "InfoNCELoss", "weight": 0.5, "in_batch_negatives": True}],
        "list_size": 4,
        "sampling": "random",
        "require_positive": True,
        "batch_size": 2,
        "max_steps": 4,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "seed": 5,
        "logging_steps": 1,
        "output_dir": str(workspace / output),
    }


def test_killed_run_resumes_to_the_same_weights(train_script, workspace):
    config = workspace / "run.yaml"
    interrupted = workspace / "interrupted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (interrupted / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None, f"the run ended before its first checkpoint:\n{process.stderr.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "training_record.json").exists(), "the run finished before it was killed"
    at_checkpoint = load_file(interrupted / "checkpoint-2" / "model.safetensors")

    # The uninterrupted reference, in this process, with the same settings given as flags; only the objectives
    # (InfoNCE's in-batch negatives are an argument no flag carries) come from a config file.
    reference = settings(workspace, "reference")
    (workspace / "objectives.yaml").write_text(yaml.safe_dump({"objectives": reference["objectives"]}), "utf-8")
    train_script.main(
        [
            *("--config", str(workspace / "objectives.yaml"), "--model-type", "mice"),
            *("--backbone", reference["backbone"], "--fusion-layer", "1", "--interaction-layers", "2"),
            *("--teacher-data", reference["teacher_data"], "--list-size", "4", "--sampling", "random"),
            "--require-positive",
            *("--batch-size", "2", "--max-steps", "4", "--save-steps", "2", "--learning-rate", "1e-3"),
            *("--seed", "5", "--logging-steps", "1", "--output-dir", reference["output_dir"]),
        ]
    )

    resumed = train_script.main(["--config", str(config)])
    assert resumed["hyperparameters"]["max_steps"] == 4
    state = json.loads((interrupted / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4

    expected = load_file(workspace / "reference" / "model.safetensors")
    actual = load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    moved = [name for name in expected if not torch.equal(expected[name], at_checkpoint[name])]
    assert len(moved) > len(expected) // 2, "steps 3-4 barely changed the weights: the comparison would be empty"
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_output_folder_loads_and_records_the_run(train_script, workspace):
    output = workspace / "reference"
    if not (output / "training_record.json").is_file():
        train_script.main(
            ["--config", str(workspace / "run.yaml"), "--output-dir", str(output), "--no-resume", "--max-steps", "2"]
        )
    record = json.loads((output / "training_record.json").read_text())
    assert record["model_type"] == "mice" and record["backbone"] == str(workspace / "backbone")
    assert (record["fusion_layer"], record["interaction_layers"], record["dropped_layers"]) == (1, 2, [])
    assert [(o["name"], o["weight"]) for o in record["objectives"]] == [("MarginMSELoss", 1.0), ("InfoNCELoss", 0.5)]
    assert record["objectives"][1]["config"]["in_batch_negatives"] is True
    assert record["teacher"] == {"name": "hand-made", "description": "scores written by the test"}
    assert record["data"]["train_queries"] == 12 and record["data"]["list_size"] == 4
    assert record["hyperparameters"]["learning_rate"] == 1e-3 and record["hyperparameters"]["seed"] == 5
    assert record["final_train_loss"] > 0

    pairs = [["which package has tool 3", "debian package 3 ships the 3 tool"], ["which package", "bash"]]
    cross_encoder = CrossEncoder(str(output), trust_remote_code=True, activation_fn=torch.nn.Identity())
    scores = cross_encoder.predict(pairs, convert_to_tensor=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(output), trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(output))
    with torch.no_grad():
        logits = model(**tokenizer(*zip(*pairs, strict=True), padding=True, return_tensors="pt")).logits.view(-1)
    assert model.config.model_type == "mice"
    torch.testing.assert_close(scores.float(), logits, atol=1e-5, rtol=1e-4)


def test_unknown_setting_and_objective_are_named(train_script, workspace, capsys):
    config = workspace / "bad.yaml"
    config.write_text(yaml.safe_dump({"lerning_rate": 1e-5}), encoding="utf-8")
    with pytest.raises(SystemExit):
        train_script.parse_settings(["--config", str(config), "--output-dir", "x", "--teacher-data", "y"])
    assert "unknown setting(s) ['lerning_rate']" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown objective 'ListMLE'"):
        train_script.objective_specs(["ListMLE:2"])
    assert train_script.objective_specs(["kl:0.5", {"name": "KLDivergenceLoss", "temperature": 2}]) == [
        ("KLDivergenceLoss", 0.5, {}),
        ("KLDivergenceLoss", 1.0, {"temperature": 2}),
    ]


def test_frozen_independent_layers_train_only_the_upper_part(train_script, workspace, capsys):
    output = workspace / "frozen"
    record = train_script.main(
        [
            "--config", str(workspace / "run.yaml"), "--output-dir", str(output), "--no-resume", "--max-steps", "2",
            "--freeze-independent-layers", "--pooling", "mean", "--cls-reads-document",
        ]
    )  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["pooling"] == "mean" and config["mask_cls_to_doc"] is False and config["mask_query_to_cls"] is True
    untrained = AutoModelForSequenceClassification.from_pretrained(str(workspace / "backbone"))
    trained = load_file(output / "model.safetensors")
    lower = {k: v for k, v in trained.items() if k.startswith("mice.backbone.") and ".pooler." not in k}
    source = untrained.base_model.state_dict()
    # The embeddings and layer 0 (below fusion layer 1) are exactly the backbone's; the layers above have moved,
    # and so has BERT's pooler, which reads the last interaction layer's [CLS].
    assert lower and all(torch.equal(v, source[k.removeprefix("mice.backbone.")]) for k, v in lower.items())
    upper = [k for k in trained if k.startswith("mice.interaction.0.")]
    assert any(not torch.equal(trained[k], source[k.replace("mice.interaction.0.", "encoder.layer.1.")]) for k in upper)
    assert not torch.equal(trained["mice.backbone.pooler.dense.weight"], source["pooler.dense.weight"])
    assert record["trainable_parameters"] == record["num_parameters"] - sum(v.numel() for v in lower.values())
    with pytest.raises(SystemExit):
        train_script.parse_settings(
            ["--model-type", "cross-encoder", "--freeze-independent-layers", "--output-dir", "x", "--teacher-data", "y"]
        )
    assert "--freeze-independent-layers is for MICE" in capsys.readouterr().err


@pytest.mark.parametrize("model_type", ["cross-encoder", "mice"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_setting_reaches_every_dropout_of_the_family(train_script, tmp_path, family, model_type):
    backbone = build_tiny_backbone(tmp_path, family, num_hidden_layers=3)
    queries, documents = ["which package has the tool"], [["debian ships the tool", "a font for the console"]]

    def train_mode_scores(dropout: float) -> list[torch.Tensor]:
        flags = ["--model-type", model_type, "--fusion-layer", "1", "--interaction-layers", "2", "--dropout"]
        settings = train_script.parse_settings([*flags, str(dropout), "--output-dir", "x", "--teacher-data", "y"])
        model = train_script.build_model(settings, str(backbone))
        model.model.train()
        with torch.no_grad():
            return [score_lists(model, queries, documents) for _ in range(2)]

    noisy = train_mode_scores(0.5)
    assert not torch.equal(*noisy), "dropout 0.5 should make two training-mode passes differ"
    quiet = train_mode_scores(0.0)
    assert torch.equal(*quiet), "with --dropout 0 a training-mode pass must be deterministic"


def test_dropout_out_of_range_is_refused(train_script, capsys):
    with pytest.raises(SystemExit):
        train_script.parse_settings(["--dropout", "1.5", "--output-dir", "x", "--teacher-data", "y"])
    assert "--dropout must be in [0, 1), got 1.5" in capsys.readouterr().err
