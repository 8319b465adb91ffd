"""Where to fuse: convert one parent cross-encoder into MICE at several (fusion layer, interaction layers) and
measure, for each, the share of the parent's nDCG@10 it keeps and how much faster it re-ranks.

    python scripts/convert_sweep.py --cross_encoder PARENT --data ../shared/data/debian-known-item \\
        --evaluate ../shared/data/{debian-known-item,scifact,cranfield,cisi,vaswani,cacm} \\
        --layers 2+4 3+3 4+2 2+2 3+2 4+1 --output runs/sweep --steps 600

Every conversion uses the same parent scores (built once, under ``--output``) and the same settings (any flag of
``mice convert``; ``--output`` is the sweep's folder). Evaluation re-ranks BM25's top ``--eval_depth`` of each
folder's ``--split`` queries with the parent and every MICE in one ``evaluation.harness.evaluate`` run, so the
latencies are measured side by side: the speed-up of a MICE model is the parent's mean re-ranking time per query divided by its own (documents encoded in advance, as MICE is used).
The first ``--evaluate`` folder is the in-domain one; the others are averaged as out of domain. Writes
``sweep.json``, ``sweep.md`` (the table) and ``sweep.png`` (retained nDCG@10 against speed-up, the Pareto front
marked). Finished conversions and re-rankings are reused when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from evaluation.harness import EvaluationConfig, evaluate, write_json
from mice_rerank.cli import add_dataclass_arguments, dataclass_values
from trainers.conversion import ConversionConfig, convert


def parse_layers(text: str) -> tuple[int, int]:
    fusion, _, interaction = text.partition("+")
    try:
        return int(fusion), int(interaction)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FUSION+INTERACTION, e.g. 4+2") from None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better for both)."""
    return [
        i for i, (x, y) in enumerate(points) if not any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points)
    ]


def merge_reports(first: dict, second: dict) -> dict:
    """One report from two ``evaluate`` reports of the same systems on different folders."""
    for key in ("datasets", "significance"):
        first[key] |= second[key]
    for system, results in second["results"].items():
        first["results"][system] |= results
    return first


def summarize(report: dict, parent: str, names: dict[str, tuple[int, int]]) -> list[dict]:
    """One row per MICE model: retained nDCG@10 per collection, in-domain, out-of-domain mean, speed-up."""
    datasets = list(report["datasets"])
    results = report["results"]

    def ndcg(system: str, dataset: str) -> float:
        return results[system][dataset]["metrics"]["ndcg@10"]

    def latency(system: str, dataset: str) -> float:
        return results[system][dataset]["latency"]["mean_ms"]

    rows = []
    for name, (fusion, interaction) in names.items():
        retained = {d: ndcg(name, d) / ndcg(parent, d) for d in datasets}
        out_of_domain = datasets[1:]
        speedups = {d: latency(parent, d) / latency(name, d) for d in datasets}
        rows.append(
            {
                "model": name,
                "fusion_layer": fusion,
                "interaction_layers": interaction,
                "ndcg@10": {d: ndcg(name, d) for d in datasets},
                "retained": retained,
                "retained_in_domain": retained[datasets[0]],
                "retained_out_of_domain_mean": (
                    sum(ndcg(name, d) for d in out_of_domain) / sum(ndcg(parent, d) for d in out_of_domain)
                    if out_of_domain
                    else None
                ),
                "speedup": speedups,
                "speedup_mean": sum(speedups.values()) / len(speedups),
            }
        )
    return rows


def markdown(rows: list[dict], report: dict, parent: str) -> str:
    datasets = list(report["datasets"])
    header = ["MICE", *datasets, "retained in-domain", "retained OOD mean", "speed-up (mean)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    parent_row = [report["results"][parent][d]["metrics"]["ndcg@10"] for d in datasets]
    lines.append("| parent | " + " | ".join(f"{v:.3f}" for v in parent_row) + " | 100% | 100% | 1.0× |")
    for row in rows:
        cells = [f"ℓ{row['fusion_layer']}+{row['interaction_layers']}"]
        cells += [f"{row['ndcg@10'][d]:.3f}" for d in datasets]
        out = row["retained_out_of_domain_mean"]
        cells += [
            f"{100 * row['retained_in_domain']:.1f}%",
            "—" if out is None else f"{100 * out:.1f}%",
            f"{row['speedup_mean']:.1f}×",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(row["speedup_mean"], row["retained_in_domain"]) for row in rows]
    front = set(pareto_front(points))
    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (row, (x, y)) in enumerate(zip(rows, points, strict=True)):
        axis.scatter(x, 100 * y, color="tab:red" if index in front else "tab:gray", zorder=3)
        axis.annotate(f"ℓ{row['fusion_layer']}+{row['interaction_layers']}", (x, 100 * y), xytext=(4, 4),
                      textcoords="offset points", fontsize=8)  # fmt: skip
    ordered = sorted((points[i] for i in front), key=lambda p: p[0])
    axis.plot([x for x, _ in ordered], [100 * y for _, y in ordered], color="tab:red", linewidth=1)
    axis.axhline(95, color="black", linestyle=":", linewidth=1)
    axis.set_xlabel("re-ranking speed-up over the parent (documents encoded in advance)")
    axis.set_ylabel("nDCG@10 kept, in-domain (%)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every mice convert flag; --output is the sweep's folder (models, parent scores, runs, tables), and
    # fusion_layer / interaction_layers are set per run from --layers.
    add_dataclass_arguments(parser, ConversionConfig, "conversion")
    parser.add_argument("--layers", type=parse_layers, nargs="+", required=True, help="FUSION+INTERACTION, e.g. 4+2")
    parser.add_argument("--evaluate", nargs="+", required=True, help="BEIR folders; the first is in-domain")
    parser.add_argument(
        "--split", nargs="+", default=["test"], help="qrels split evaluated: one for all folders, or one per folder"
    )
    parser.add_argument("--eval_depth", type=int, default=30, help="BM25 candidates re-ranked per evaluated query")
    parser.add_argument("--eval_queries", type=int, help="at most this many queries per collection (seed 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    output = Path(args.output)
    base = ConversionConfig(**dataclass_values(args, ConversionConfig))
    base = replace(base, parent_scores=base.parent_scores or str(output / "parent_scores"))
    names: dict[str, tuple[int, int]] = {}
    for fusion, interaction in args.layers:
        folder = output / f"mice-l{fusion}+{interaction}"
        if not (folder / "conversion.json").is_file():
            convert(replace(base, output=str(folder), fusion_layer=fusion, interaction_layers=interaction))
        names[folder.name] = (fusion, interaction)

    splits = args.split * len(args.evaluate) if len(args.split) == 1 else args.split
    if len(splits) != len(args.evaluate):
        parser.error(f"give one --split, or one per --evaluate folder ({len(args.evaluate)})")
    systems = [f"ce:{args.cross_encoder}", *(f"mice:{output / name}" for name in names)]
    report = None
    for folder, split in zip(args.evaluate, splits, strict=True):
        config = EvaluationConfig(
            data=[folder],
            models=systems,
            split=split,
            depth=args.eval_depth,
            max_queries=args.eval_queries,
            runs_folder=str(output / "runs"),
        )
        part = evaluate(config)
        report = part if report is None else merge_reports(report, part)
    write_json(report, output / "evaluation.json")
    parent = next(name for name, system in report["systems"].items() if system.get("kind") == "cross-encoder")
    rows = summarize(report, parent, names)
    (output / "sweep.json").write_text(json.dumps({"parent": args.cross_encoder, "rows": rows}, indent=2) + "\n")
    (output / "sweep.md").write_text(markdown(rows, report, parent), encoding="utf-8")
    plot(rows, output / "sweep.png")
    print(markdown(rows, report, parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
