"""scripts/experiments.py: what each run of the grid starts from and the training configuration it gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loaders import load_script


@pytest.fixture(scope="module")
def experiments():
    return load_script("experiments")


@pytest.mark.parametrize("from_cross_encoder", [False, True])
def test_each_mice_starts_from_the_backbone_or_its_objectives_cross_encoder(experiments, tmp_path, from_cross_encoder):
    output = tmp_path / "grid"
    argv = ["--data", str(tmp_path), "--output", str(output), "--objectives", "margin_mse", "info_nce"]
    argv += ["--backbone", "BACKBONE", "--steps", "40"]  # (--bf16 is refused on a machine without a GPU)
    argv += ["--mice-from-cross-encoder"] if from_cross_encoder else []
    runs = experiments.grid(tmp_path / "teacher", experiments.parse_args(argv))

    folders = [output / "models" / name for name in ("cross-encoder-margin_mse", "mice-margin_mse")]
    folders += [output / "models" / name for name in ("cross-encoder-info_nce", "mice-info_nce")]
    assert [spec for spec, _ in runs] == [f"{'mice' if 'mice-' in f.name else 'ce'}:{f}" for f in folders]
    configs = [config for _, config in runs]
    assert [c.training.output_dir for c in configs] == [str(f) for f in folders]
    assert [c.model.model_type for c in configs] == ["cross-encoder", "mice"] * 2
    # The cross-encoder of an objective is trained first, so that its MICE can start from it.
    starts = [c.model.backbone for c in configs]
    if from_cross_encoder:
        assert starts == ["BACKBONE", str(folders[0]), "BACKBONE", str(folders[2])]
    else:
        assert starts == ["BACKBONE"] * 4
    assert [c.distillation.objectives for c in configs] == [["margin_mse"]] * 2 + [["info_nce"]] * 2
    assert all(c.training.max_steps == 40 and c.training.warmup_steps == 4 for c in configs)
    assert {c.distillation.teacher_data for c in configs} == {str(tmp_path / "teacher")}
    # Only the objectives trained on labels need a labelled positive in each list.
    assert [c.distillation.require_positive for c in configs] == [False, False, True, True]
    # The grid's defaults: fusion layer 2 with 2 interaction layers (docs/results.md, session 7).
    assert {(c.model.fusion_layer, c.model.interaction_layers) for c in configs} == {(2, 2)}


def test_finished_runs_are_not_trained_again(experiments, tmp_path):
    output = tmp_path / "grid"
    args = experiments.parse_args(["--data", str(tmp_path), "--output", str(output), "--objectives", "bce"])
    cross_encoder, mice = (config for _, config in experiments.grid(tmp_path / "teacher", args))
    finished = Path(cross_encoder.training.output_dir)
    finished.mkdir(parents=True)
    (finished / "training_record.json").write_text(json.dumps({"train_runtime_s": 1.0}), encoding="utf-8")
    assert experiments.finished(cross_encoder) and not experiments.finished(mice)
    assert cross_encoder.model.backbone is None and not cross_encoder.training.bf16  # the packaged MiniLM, fp32
