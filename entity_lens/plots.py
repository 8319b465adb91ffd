"""Plots of an Entity Lens run (`results.json`): metrics against layer per mode with the control, single- against
multi-token mentions, seen against held-out entities, and the relation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

METRICS = (("exact_match", "exact match", 100.0), ("partial_match", "partial match", 100.0), ("chrf", "chrF", 1.0))


def _series(task: dict[str, Any], subset: str, metric: str, scale: float) -> tuple[list[int], list[float]]:
    layers = sorted(int(layer) for layer in task["layers"])
    values = [task["layers"][str(layer)][subset][metric] for layer in layers]
    return layers, [float("nan") if value is None else value * scale for value in values]  # None: no such mention


def _figure(title: str, columns: int = 3):
    figure, axes = plt.subplots(1, columns, figsize=(5 * columns, 3.8), squeeze=False)
    figure.suptitle(title, fontsize=11)
    return figure, axes[0]


def _finish(figure, axes, path: Path) -> Path:
    for axis in axes:
        axis.set_xlabel("layer (resid_post)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_results(results: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write the run's PNG plots into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = f"{results['model']} (4-bit GGUF)" if results.get("quantization_note") else results["model"]
    tasks = results["tasks"]
    mentions = {name: task for name, task in tasks.items() if task["task"] == "mention"}
    relations = {name: task for name, task in tasks.items() if task["task"] != "mention"}
    written = []
    for group, title, path in (
        (mentions, f"{model}: held-out entities, and the different-entity control", "metrics_by_layer.png"),
        (relations, f"{model}: relation on held-out countries, and the control", "relation.png"),
    ):
        if not group:
            continue
        figure, axes = _figure(title)
        for axis, (metric, label, scale) in zip(axes, METRICS, strict=True):
            for name, task in group.items():
                line = axis.plot(*_series(task, "test", metric, scale), marker="o", label=f"{name}")[0]
                axis.plot(
                    *_series(task, "control", metric, scale), ls="--", color=line.get_color(), label=f"{name} control"
                )
            axis.set_ylabel(label)
        written.append(_finish(figure, axes, folder / path))
    if mentions:
        for subsets, title, path in (
            (
                (("test_single_token", "1 token"), ("test_multi_token", "≥3 tokens")),
                f"{model}: single- vs multi-token held-out mentions",
                "token_length.png",
            ),
            ((("seen", "seen"), ("test", "held out")), f"{model}: seen vs held-out entities", "seen_unseen.png"),
        ):
            figure, axes = _figure(title)
            for axis, (metric, label, scale) in zip(axes, METRICS, strict=True):
                for name, task in mentions.items():
                    for (subset, subset_label), style in zip(subsets, ("-", ":"), strict=True):
                        axis.plot(
                            *_series(task, subset, metric, scale), ls=style, marker=".", label=f"{name}, {subset_label}"
                        )
                axis.set_ylabel(label)
            written.append(_finish(figure, axes, folder / path))
    return written


def plot_comparison(runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Exact match and chrF against relative depth (layer / last layer) for several models' runs."""
    figure, axes = _figure("Entity Lens across models (held-out entities)", columns=2)
    for results in runs:
        for name, task in results["tasks"].items():
            if task["task"] != "mention":
                continue
            for axis, (metric, label, scale) in zip(axes, (METRICS[0], METRICS[2]), strict=True):
                layers, values = _series(task, "test", metric, scale)
                depth = max(results.get("num_layers", max(layers) + 1) - 1, 1)
                axis.plot([layer / depth for layer in layers], values, marker="o", label=f"{results['model']} {name}")
                axis.set_ylabel(label)
    for axis in axes:
        axis.set_xlabel("relative depth (layer / last layer)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
