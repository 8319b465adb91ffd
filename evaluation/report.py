"""Markdown tables and matplotlib plots from an ``evaluation.json`` report (see ``evaluation.harness``).

Significance markers follow the papers' convention: each system gets a letter (a, b, c, ... in table order) and a
figure carries the superscript letters of the systems it beats with p < max_p (paired t-test).
"""

from __future__ import annotations

from pathlib import Path

SUPERSCRIPTS = dict(zip("abcdefghijklmnopqrstuvwxyz", "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖqʳˢᵗᵘᵛʷˣʸᶻ", strict=True))
METRIC_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "R@100", "map": "MAP"}


def _letters(systems: list[str]) -> dict[str, str]:
    return {system: chr(ord("a") + index) for index, system in enumerate(systems)}


def _marked(report: dict, dataset: str, system: str, metric: str, letters: dict[str, str]) -> str:
    value = report["results"][system][dataset]["metrics"][metric]
    beaten = report["significance"][dataset]["better_than"][system][metric]
    return f"{value:.3f}" + "".join(SUPERSCRIPTS[letters[other]] for other in sorted(beaten, key=letters.get))


def dataset_table(report: dict, dataset: str) -> str:
    """One dataset: every metric and the latency of every system, with significance markers."""
    systems = [s for s in report["results"] if dataset in report["results"][s]]
    letters = _letters(systems)
    metrics = report["settings"]["metrics"]
    header = [
        "",
        "system",
        *[METRIC_LABELS.get(m, m) for m in metrics],
        "ms/query (mean)",
        "p50",
        "p95",
        "doc encoding",
    ]
    rows = [header, ["---"] * 2 + ["---:"] * (len(header) - 2)]
    for system in systems:
        entry = report["results"][system][dataset]
        latency = entry.get("latency")
        encoding = entry.get("document_encoding")
        rows.append(
            [
                letters[system],
                system,
                *[_marked(report, dataset, system, metric, letters) for metric in metrics],
                *([f"{latency[k]:.1f}" for k in ("mean_ms", "p50_ms", "p95_ms")] if latency else ["—"] * 3),
                f"{encoding['ms_per_document']:.2f} ms/doc" if encoding else "—",
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def summary_table(report: dict, metric: str = "ndcg@10") -> str:
    """One metric, systems by datasets (the papers' layout), with significance markers and the mean."""
    datasets = list(report["datasets"])
    systems = list(report["results"])
    letters = _letters(systems)
    header = ["", "system", *datasets, "mean"]
    rows = [header, ["---"] * 2 + ["---:"] * (len(header) - 2)]
    for system in systems:
        values = [report["results"][system][d]["metrics"][metric] for d in datasets if d in report["results"][system]]
        cells = [
            _marked(report, d, system, metric, letters) if d in report["results"][system] else "—" for d in datasets
        ]
        rows.append([letters[system], system, *cells, f"{sum(values) / len(values):.3f}" if values else "—"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def markdown_report(report: dict) -> str:
    """The whole report as markdown: settings, a summary over datasets, then one table per dataset."""
    settings = report["settings"]
    lines = [
        "# Re-ranking evaluation",
        "",
        f"Split `{settings['split']}`, first stage: {settings['first_stage']}, re-ranking depth {settings['depth']}, "
        + (
            f"each model interpolated with the first stage (weight {settings['interpolate']:g}), "
            if settings.get("interpolate") is not None
            else ""
        )
        + f"batch size {settings['batch_size']}"
        + (
            f", {settings['max_queries']} queries sampled with seed {settings['seed']}"
            if settings["max_queries"]
            else ""
        )
        + ".",
        "",
        f"Superscript letters: significantly better than that system ({report['significance'][next(iter(report['datasets']))]['test']}, "
        f"p < {report['significance'][next(iter(report['datasets']))]['max_p']}). Latency: re-ranking time per query; "
        "MICE's one-off document encoding is reported apart (ms per document).",
        "",
    ]
    if len(report["datasets"]) > 1:
        lines += ["## nDCG@10", "", summary_table(report), ""]
    for dataset, info in report["datasets"].items():
        retrieval = info.get("first_stage_ms_per_query")
        timing = f" BM25 retrieval: {retrieval:.1f} ms per query." if retrieval is not None else ""
        lines += [f"## {dataset}", "", f"{info['queries']} queries, {info['documents']} documents.{timing}", ""]
        lines += [dataset_table(report, dataset), ""]
    return "\n".join(lines)


def write_markdown(report: dict, path: str | Path) -> Path:
    """Write ``markdown_report(report)`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_report(report), encoding="utf-8")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed (or present on servers and CI)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return path


def plot_effectiveness(report: dict, path: str | Path, metric: str = "ndcg@10") -> Path:
    """Grouped bars: ``metric`` per dataset, one bar per system; saved as PNG.

    Bars carry their values while there are few systems (at most 5); with more, the values would overlap, so read
    them from the table. Colours come from a 20-colour map so that a grid of systems stays distinguishable.
    """
    plt = _pyplot()
    datasets = list(report["datasets"])
    systems = list(report["results"])
    width = 0.8 / len(systems)
    colours = plt.get_cmap("tab10" if len(systems) <= 10 else "tab20").colors
    many = len(systems) > 5
    figure, axes = plt.subplots(figsize=(max(4.0, (2.0 if many else 1.6) * len(datasets) + 2 + 2.5 * many), 3.6))
    for index, system in enumerate(systems):
        values = [report["results"][system].get(d, {}).get("metrics", {}).get(metric, 0.0) for d in datasets]
        positions = [d + (index - (len(systems) - 1) / 2) * width for d in range(len(datasets))]
        bars = axes.bar(positions, values, width, label=system, color=colours[index % len(colours)])
        if not many:
            axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(range(len(datasets)), datasets)
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.set_ylim(0, 1)
    # Many systems: the legend goes beside the axes, where it hides no bar.
    axes.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if many else {}))
    axes.set_title(f"{METRIC_LABELS.get(metric, metric)} (split {report['settings']['split']})")
    return _save(figure, path)


def plot_latency(curves: dict[str, list[dict[str, float]]], path: str | Path) -> Path:
    """Mean (and p95 as a dashed line) per-query re-ranking latency against the number of documents re-ranked.

    Args:
        curves: ``{system: evaluation.harness.latency_curve(...)}``.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.6))
    for system, points in curves.items():
        documents = [p["documents"] for p in points]
        line = axes.plot(documents, [p["mean_ms"] for p in points], marker="o", label=f"{system} (mean)")[0]
        axes.plot(documents, [p["p95_ms"] for p in points], linestyle="--", color=line.get_color(), alpha=0.6)
    axes.set_xlabel("documents re-ranked per query")
    axes.set_ylabel("ms per query")
    axes.legend(fontsize=8)
    axes.set_title("Re-ranking latency (dashed: p95)")
    return _save(figure, path)
