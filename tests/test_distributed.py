"""Distributed training: two processes started by `accelerate launch` on the CPU (gloo) train a tiny MICE to the weights
of one process with twice the per-device batch, and resume from their checkpoint as two processes.

(`accelerate launch --cpu --num_processes 2` starts a single process unless an MPI hostfile is given; accelerate's
torchrun launcher, `--multi_gpu --num_processes 2`, starts two, which ``DistillationTrainingArguments`` puts on the CPU
over gloo when the machine has no accelerator.)"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_models import build_tiny_backbone

from ranking_data.teacher_data import TeacherDataset
from trainers import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
QUERIES = 16  # four global batches of four lists: one epoch, so both runs see the same rows in the same steps

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny BERT backbone, a hand-made teacher dataset and `run.yaml`: MICE-ℓ1+2, every layer trained, SGD with a
    constant learning rate (the gradients' float noise stays float noise) and no dropout (its random draws differ
    between one process and two)."""
    folder = tmp_path_factory.mktemp("distributed")
    build_tiny_backbone(folder, "bert", num_hidden_layers=3, cross_encoder=True).rename(folder / "backbone")
    documents = {f"d{i}": f"debian package {i % 7} ships the {i} tool" for i in range(40)}
    queries = {f"q{i}": f"which package has tool {i}" for i in range(QUERIES)}
    rows = [
        {
            "query_id": f"q{i}",
            "document_ids": [f"d{(3 * i + j) % 40}" for j in range(4)],
            "scores": [3.0, 2.0, 1.5, 0.1 * i],
        }
        for i in range(QUERIES)
    ]
    TeacherDataset.from_records(rows, queries, documents).save_to_disk(folder / "teacher")
    settings = {
        "model_type": "mice",
        "backbone": str(folder / "backbone"),
        "fusion_layer": 1,
        "interaction_layers": 2,
        "dropout": 0.0,
        "teacher_data": str(folder / "teacher"),
        "objectives": ["margin_mse"],
        "list_size": 4,
        "optim": "sgd",
        "learning_rate": 0.5,
        "lr_scheduler_type": "constant",
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "seed": 3,
        "report_to": "none",
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_processes(config: Path, *flags: str) -> dict:
    """`accelerate launch --multi_gpu --num_processes 2 scripts/train.py CONFIG FLAGS` on this machine's CPU; the
    summary the main process prints."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(free_port()), str(REPO / "scripts" / "train.py"), str(config), *flags]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith('{"output_dir"')]
    assert len(summaries) == 1, f"one summary, from the main process only:\n{result.stdout[-2000:]}"
    return json.loads(summaries[0])


def test_two_processes_with_half_the_batch_reach_one_process_weights_and_resume(workspace):
    config = workspace / "run.yaml"
    two = workspace / "two-processes"
    # Two steps as two processes, two per device...
    first = launch_two_processes(
        config, "--per_device_train_batch_size", "2", "--max_steps", "2", "--output_dir", str(two)
    )
    assert first["resumed_from"] is None
    checkpoint = two / "checkpoint-2"
    assert {path.name for path in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    # ...then the same two processes resume from that checkpoint for two more steps.
    (two / "model.safetensors").unlink()
    resumed = launch_two_processes(config, "--per_device_train_batch_size", "2", "--output_dir", str(two))
    assert resumed["resumed_from"] == str(checkpoint)
    assert json.loads((two / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4

    # One process, four per device, four steps straight.
    one = train(TrainConfig.from_file(config, per_device_train_batch_size=4, output_dir=str(workspace / "one")))
    assert one.record["hyperparameters"]["per_device_train_batch_size"] == 4

    before = load_file(checkpoint / "model.safetensors")
    expected, actual = load_file(workspace / "one" / "model.safetensors"), load_file(two / "model.safetensors")
    assert expected.keys() == actual.keys()
    moved = [name for name in expected if (expected[name] - before[name]).abs().max() > 1e-3]
    assert len(moved) > len(expected) // 2, "steps 3-4 barely moved the weights: the comparison would be empty"
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=2e-5, rtol=1e-4, msg=name)
    shutil.rmtree(workspace / "one")
