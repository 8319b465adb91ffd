"""Training from a config: scripts/train.py and `mice train` end to end on a tiny MICE (Ctrl-C mid-run, resume, the
same weights as an uninterrupted run), the output loads, the config's files and flags, one-line errors."""

from __future__ import annotations

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

from mice_rerank import cli
from ranking_data.teacher_data import TeacherDataset
from trainers import ConfigError, ModelConfig, TrainConfig, build_model, score_lists, train
from trainers.training import last_complete_checkpoint, objective_specs

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"


pytestmark = pytest.mark.usefixtures("one_thread")


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
        "per_device_train_batch_size": 2,
        "max_steps": 4,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "seed": 5,
        "logging_steps": 1,
        "output_dir": str(workspace / output),
        "report_to": "none",
    }


def test_interrupted_run_says_so_and_resumes_to_the_same_weights(workspace, capsys):
    config = workspace / "run.yaml"
    interrupted = workspace / "interrupted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), str(config)],
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
    process.send_signal(signal.SIGINT)  # Ctrl-C
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "interrupted: run the same command again to resume from the last checkpoint" in stderr
    assert not (interrupted / "training_record.json").exists(), "the run finished before it was interrupted"
    at_checkpoint = load_file(interrupted / "checkpoint-2" / "model.safetensors")
    # Resumed under another learning rate, the checkpoint would go on with the first run's optimizer: refused.
    assert cli.main(["train", str(config), "--learning_rate", "3e-4"]) == 2
    error = capsys.readouterr().err
    assert f"{interrupted} holds a training run with other settings (training.learning_rate: 0.001 there, " in error
    assert "Traceback" not in error
    assert not (interrupted / "checkpoint-3").exists()

    # The uninterrupted reference, in this process, with the same settings given as flags of `mice train`.
    reference = settings(workspace, "reference")
    flags = ["train", "--model_type", "mice", "--backbone", reference["backbone"], "--fusion_layer", "1"]
    flags += ["--interaction_layers", "2", "--teacher_data", reference["teacher_data"], "--list_size", "4"]
    flags += ["--objectives", "MarginMSELoss", json.dumps(reference["objectives"][1]), "--sampling", "random"]
    flags += ["--require_positive", "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_steps", "2"]
    flags += ["--learning_rate", "1e-3", "--seed", "5", "--logging_steps", "1", "--report_to", "none"]
    assert cli.main([*flags, "--output_dir", reference["output_dir"]]) == 0

    resumed = train(TrainConfig.from_file(config))
    assert resumed.resumed_from == str(interrupted / "checkpoint-2")
    assert resumed.record["hyperparameters"]["max_steps"] == 4
    state = json.loads((interrupted / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4

    expected = load_file(workspace / "reference" / "model.safetensors")
    actual = load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    moved = [name for name in expected if not torch.equal(expected[name], at_checkpoint[name])]
    assert len(moved) > len(expected) // 2, "steps 3-4 barely changed the weights: the comparison would be empty"
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
    # The arguments beside the model and in its checkpoints are JSON, not sentence-transformers' pickle.
    for folder in (interrupted, interrupted / "checkpoint-4"):
        assert not (folder / "training_args.bin").exists()
        assert json.loads((folder / "training_args.json").read_text())["max_steps"] == 4


def test_a_checkpoint_written_in_part_is_not_resumed_from(tmp_path):
    for step, complete in ((2, True), (4, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(tmp_path / "absent") is None


def test_output_folder_loads_and_records_the_run(workspace):
    output = workspace / "reference"
    if not (output / "training_record.json").is_file():
        train(TrainConfig.from_file(workspace / "run.yaml", output_dir=str(output), resume=False, max_steps=2))
    record = json.loads((output / "training_record.json").read_text())
    assert record["model_type"] == "mice" and record["backbone"] == str(workspace / "backbone")
    assert (record["fusion_layer"], record["interaction_layers"], record["dropped_layers"]) == (1, 2, [])
    assert [(o["name"], o["weight"]) for o in record["objectives"]] == [("MarginMSELoss", 1.0), ("InfoNCELoss", 0.5)]
    assert record["objectives"][1]["config"]["in_batch_negatives"] is True
    assert "@inproceedings{gao2021rethink" in record["objectives"][1]["citation"]  # the card cites it from here
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


def test_config_files_flags_and_their_errors(workspace, tmp_path, capsys):
    values = {**settings(workspace, "x"), "learning_rate": "1e-3", "max_steps": "4"}  # YAML reads 1e-3 as a string
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    (tmp_path / "run.json").write_text(json.dumps(values), encoding="utf-8")
    for path in ("run.yaml", "run.json"):
        config = TrainConfig.from_file(tmp_path / path, seed=7)
        assert config.training.learning_rate == 1e-3 and config.training.max_steps == 4 and config.training.seed == 7
        assert config.model.model_type == "mice" and config.distillation.list_size == 4
    assert TrainConfig.from_dict(values).distillation.objectives[1] == {
        "name": "InfoNCELoss",
        "weight": 0.5,
        "in_batch_negatives": True,
    }

    errors = [
        ({**values, "lerning_rate": 1e-5}, "unknown setting(s) ['lerning_rate']"),
        ({k: v for k, v in values.items() if k != "output_dir"}, "output_dir is required"),
        ({k: v for k, v in values.items() if k != "teacher_data"}, "teacher_data is required"),
        ({**values, "max_steps": "many"}, "max_steps must be int, got 'many'"),
        ({**values, "model_type": "cross-encoder", "freeze_independent_layers": True}, "is for MICE"),
        ({**values, "dropout": 1.5}, r"dropout must be in [0, 1), got 1.5"),
    ]
    for bad, message in errors:
        with pytest.raises(ConfigError) as error:
            TrainConfig.from_dict(bad)
        assert message in str(error.value)
    with pytest.raises(ConfigError, match="unknown objective 'ListMLE'"):
        objective_specs(["ListMLE:2"])
    assert objective_specs(["kl:0.5", {"name": "KLDivergenceLoss", "temperature": 2}]) == [
        ("KLDivergenceLoss", 0.5, {}),
        ("KLDivergenceLoss", 1.0, {"temperature": 2}),
    ]

    # The command says what was wrong in one line, with a hint, and no traceback.
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**values, "lerning_rate": 1e-5}), encoding="utf-8")
    assert cli.main(["train", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown setting(s) ['lerning_rate']") and "\nhint: " in err and "Traceback" not in err
    assert cli.main(["train", str(tmp_path / "run.yaml"), "--teacher_data", str(tmp_path / "nowhere")]) == 2
    assert "is not a saved teacher dataset" in capsys.readouterr().err


def test_frozen_independent_layers_train_only_the_upper_part(workspace):
    output = workspace / "frozen"
    assert cli.main(
        [
            "train", str(workspace / "run.yaml"), "--output_dir", str(output), "--no_resume", "--max_steps", "2",
            "--freeze_independent_layers", "--pooling", "mean", "--cls_reads_document",
        ]
    ) == 0  # fmt: skip
    record = json.loads((output / "training_record.json").read_text())
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


@pytest.mark.parametrize("model_type", ["cross-encoder", "mice"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_setting_reaches_every_dropout_of_the_family(tmp_path, family, model_type):
    backbone = build_tiny_backbone(tmp_path, family, num_hidden_layers=3)
    queries, documents = ["which package has the tool"], [["debian ships the tool", "a font for the console"]]

    def train_mode_scores(dropout: float) -> list[torch.Tensor]:
        config = ModelConfig(model_type, str(backbone), fusion_layer=1, interaction_layers=2, dropout=dropout)
        model = build_model(config)
        model.model.train()
        with torch.no_grad():
            return [score_lists(model, queries, documents) for _ in range(2)]

    noisy = train_mode_scores(0.5)
    assert not torch.equal(*noisy), "dropout 0.5 should make two training-mode passes differ"
    quiet = train_mode_scores(0.0)
    assert torch.equal(*quiet), "with dropout 0 a training-mode pass must be deterministic"
