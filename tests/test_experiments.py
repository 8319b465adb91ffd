"""scripts/experiments.py: what each run of the grid starts from, and the flags it hands to the trainer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments.py"


@pytest.fixture
def experiments(monkeypatch):
    """The script as a module, with the trainer replaced by a recorder of its command lines."""
    spec = importlib.util.spec_from_file_location("experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.calls = []
    monkeypatch.setattr(module, "train_main", lambda argv: module.calls.append(argv) or {})
    return module


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("from_cross_encoder", [False, True])
def test_each_mice_starts_from_the_backbone_or_its_objectives_cross_encoder(experiments, tmp_path, from_cross_encoder):
    output = tmp_path / "grid"
    argv = ["--data", str(tmp_path), "--output", str(output), "--objectives", "margin_mse", "info_nce"]
    argv += ["--backbone", "BACKBONE", "--bf16"] + (["--mice-from-cross-encoder"] if from_cross_encoder else [])
    models = experiments.train_grid(tmp_path / "teacher", experiments.parse_args(argv))

    folders = [output / "models" / name for name in ("cross-encoder-margin_mse", "mice-margin_mse")]
    folders += [output / "models" / name for name in ("cross-encoder-info_nce", "mice-info_nce")]
    assert models == [f"{'mice' if 'mice-' in f.name else 'ce'}:{f}" for f in folders]
    assert [flag(call, "--output-dir") for call in experiments.calls] == [str(f) for f in folders]
    assert [flag(call, "--model-type") for call in experiments.calls] == ["cross-encoder", "mice"] * 2
    # The cross-encoder of an objective is trained first, so that its MICE can start from it.
    starts = [flag(call, "--backbone") for call in experiments.calls]
    if from_cross_encoder:
        assert starts == ["BACKBONE", str(folders[0]), "BACKBONE", str(folders[2])]
    else:
        assert starts == ["BACKBONE"] * 4
    assert all("--bf16" in call for call in experiments.calls)
    # Only the objectives trained on labels need a labelled positive in each list.
    assert ["--require-positive" in call for call in experiments.calls] == [False, False, True, True]


def test_finished_runs_are_not_trained_again(experiments, tmp_path):
    output = tmp_path / "grid"
    finished = output / "models" / "cross-encoder-bce"
    finished.mkdir(parents=True)
    (finished / "training_record.json").write_text(json.dumps({"train_runtime_s": 1.0}), encoding="utf-8")
    args = experiments.parse_args(["--data", str(tmp_path), "--output", str(output), "--objectives", "bce"])
    experiments.train_grid(tmp_path / "teacher", args)
    assert [flag(call, "--output-dir") for call in experiments.calls] == [str(output / "models" / "mice-bce")]
    assert "--bf16" not in experiments.calls[0] and "--backbone" not in experiments.calls[0]
