"""A long job's folder is resumed only by a run with the settings that started it (`ranking_data.work_folders`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ranking_data.work_folders import SETTINGS_FILE, WorkFolderError, atomic_write_text, claim_folder


def test_a_folder_is_claimed_once_then_checked(tmp_path):
    folder = tmp_path / "work"
    settings = {"learning_rate": 1e-4, "layers": (2, 3), "data": Path("/data/x")}
    claim_folder(folder, settings, "training")
    # JSON's view is recorded and compared: a tuple as a list, a path as a string.
    assert json.loads((folder / SETTINGS_FILE).read_text()) == {
        "data": "/data/x", "layers": [2, 3], "learning_rate": 1e-4,
    }  # fmt: skip
    claim_folder(folder, dict(settings), "training")  # the same run again: resumes
    with pytest.raises(WorkFolderError) as error:
        claim_folder(folder, {**settings, "learning_rate": 3e-4, "seed": 1}, "training")
    message = str(error.value)
    assert message.startswith(f"{folder} holds a training run with other settings (")
    assert "learning_rate: 0.0001 there, 0.0003 now, seed: None there, 1 now" in message
    assert "run it with those settings to resume" in message
    assert json.loads((folder / SETTINGS_FILE).read_text())["learning_rate"] == 1e-4  # left as it was


def test_starting_over_claims_the_folder_again(tmp_path):
    claim_folder(tmp_path, {"seed": 1}, "training")
    claim_folder(tmp_path, {"seed": 2}, "training", fresh=True)
    claim_folder(tmp_path, {"seed": 2}, "training")
    with pytest.raises(WorkFolderError, match="seed: 2 there, 1 now"):
        claim_folder(tmp_path, {"seed": 1}, "training")


def test_a_difference_in_a_section_is_named_by_its_own_key(tmp_path):
    claim_folder(tmp_path, {"model": {"layers": 2, "pooling": "mean"}, "training": {"seed": 1}}, "training")
    with pytest.raises(WorkFolderError, match=r"\(model\.layers: 2 there, 3 now\)"):
        claim_folder(tmp_path, {"model": {"layers": 3, "pooling": "mean"}, "training": {"seed": 1}}, "training")


def test_many_differences_are_counted_and_a_broken_record_is_named(tmp_path):
    claim_folder(tmp_path, {name: 0 for name in "abcde"}, "conversion")
    with pytest.raises(
        WorkFolderError, match=r"\(a: 0 there, 1 now, b: 0 there, 1 now, c: 0 there, 1 now and 2 more\)"
    ):
        claim_folder(tmp_path, {name: 1 for name in "abcde"}, "conversion")
    (tmp_path / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(WorkFolderError, match=f"is unreadable .*delete {tmp_path} to start the conversion over"):
        claim_folder(tmp_path, {"a": 0}, "conversion")


def test_an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
