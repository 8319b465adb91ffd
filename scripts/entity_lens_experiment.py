"""Entity Lens experiments: train and evaluate task vectors per layer, and plot them.

    # One model: datasets (built once), per-layer task vectors in raw and in-context modes, the country → capital
    # relation at a few layers; results.json and plots in runs/entity-lens/<model>/ (resumable per layer)
    python scripts/entity_lens_experiment.py run --model gemma-3-270m --output runs/entity-lens --relation-layers 4 8 12
    # Compare several runs' curves in one plot
    python scripts/entity_lens_experiment.py compare runs/entity-lens/gemma-3-270m runs/entity-lens/smollm2-135m-instruct \
        --output runs/entity-lens/comparison.png

Decoding a mention at each layer is `mice entity-lens` (see `mice entity-lens --help`); a run's task vectors are
pushed with their card by `python scripts/push_to_hub.py task-vectors <run>/<model>/<mode>/task_vectors --repo-id ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The library is imported by each command, so that `push` does not load torch.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and evaluate task vectors per layer (resumable)")
    run.add_argument("--output", required=True, help="run folder; results go to <output>/<model>/")
    run.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, smollm2-135m-instruct, a folder or Hub id")
    run.add_argument("--layers", type=int, nargs="+", help="layers to train (default: every layer)")
    run.add_argument(
        "--modes", nargs="*", default=["raw", "context"], choices=["raw", "context"], help="none: only the relation"
    )
    run.add_argument("--relation-layers", type=int, nargs="*", default=[], help="layers for country → capital")
    run.add_argument("--data", help="dataset folder (default: <output>/data); share it between models")
    run.add_argument("--debian", help="../shared/data/debian-known-item: more texts for mentions in context")
    run.add_argument("--train-examples", type=int, default=640)
    run.add_argument("--dev-examples", type=int, default=256)
    run.add_argument("--test-examples", type=int, default=300)
    run.add_argument("--seen-examples", type=int, default=150)
    run.add_argument("--context-texts", type=int, default=6000)
    run.add_argument("--batch-size", type=int, default=64, help="training batch size (the paper: 64)")
    run.add_argument("--epochs", type=int, default=5)
    run.add_argument("--constant-epochs", type=int, default=3, help="epochs before the cosine annealing")
    run.add_argument("--learning-rate", type=float, default=1e-2)
    run.add_argument(
        "--init", default="normal", choices=["normal", "arrow"], help="v's start: N(0, 1), or the `>` embedding"
    )
    run.add_argument("--relation-epochs", type=int, default=20)
    run.add_argument("--relation-constant-epochs", type=int, default=12)
    run.add_argument("--max-new-tokens", type=int, default=16)
    run.add_argument("--threads", type=int, help="torch threads (1 is often faster on a loaded shared CPU)")
    run.add_argument("--seed", type=int, default=0)

    compare = commands.add_parser("compare", help="plot several runs' held-out curves against relative depth")
    compare.add_argument("runs", nargs="+", help="run folders holding results.json")
    compare.add_argument("--output", required=True, help="PNG to write")

    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from entity_lens import EntityLensError

    try:
        if args.command == "run":
            return run(args)
        from entity_lens.plots import plot_comparison

        runs = [json.loads((Path(folder) / "results.json").read_text(encoding="utf-8")) for folder in args.runs]
        print(f"wrote {plot_comparison(runs, args.output)}")
        return 0
    except (EntityLensError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    import torch

    from entity_lens.experiment import ExperimentConfig, run_experiment
    from entity_lens.plots import plot_results
    from entity_lens.training import TrainingConfig

    def training(epochs: int, constant_epochs: int) -> TrainingConfig:
        return TrainingConfig(
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            epochs=epochs,
            constant_epochs=constant_epochs,
            init=args.init,
            seed=args.seed,
        )

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ExperimentConfig(
        output=args.output,
        model=args.model,
        layers=args.layers,
        modes=args.modes,
        relation_layers=args.relation_layers,
        data=args.data,
        debian=args.debian,
        train_examples=args.train_examples,
        dev_examples=args.dev_examples,
        test_examples=args.test_examples,
        seen_examples=args.seen_examples,
        context_texts=args.context_texts,
        max_new_tokens=args.max_new_tokens,
        training=training(args.epochs, args.constant_epochs),
        relation_training=training(args.relation_epochs, args.relation_constant_epochs),
        seed=args.seed,
    )
    try:
        results = run_experiment(config)
        plots = plot_results(results, Path(args.output) / results["folder"] / "plots")
    except KeyboardInterrupt:
        print(
            f"interrupted: finished layers are saved under {args.output}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    for name, task in results["tasks"].items():
        for layer, metrics in task["layers"].items():
            test, control = metrics["test"], metrics["control"]
            print(
                f"{name} layer {layer}: EM {test['exact_match']:.3f} partial {test['partial_match']:.3f} "
                f"chrF {test['chrf']:.1f} | control EM {control['exact_match']:.3f}"
            )
    print(f"results: {Path(args.output) / results['folder'] / 'results.json'}; plots: {', '.join(map(str, plots))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
