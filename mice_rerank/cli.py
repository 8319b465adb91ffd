"""The ``mice`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from . import quickstart


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mice", description="MICE re-rankers: train, evaluate, report.")
    commands = parser.add_subparsers(dest="command", required=True)
    quickstart.add_arguments(
        commands.add_parser(
            "quickstart",
            help="teacher data, distil MICE and a cross-encoder, evaluate, report (resumable)",
            description=quickstart.__doc__,
        )
    )
    from embeddings import cli as embedder_cli

    embedder_cli.add_arguments(
        commands.add_parser(
            "distill-embedder",
            help="a light dual encoder (DE-2) from a cross-encoder",
            description=embedder_cli.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    if args.command == "distill-embedder":
        return embedder_cli.run(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "quickstart":
        report = quickstart.run_quickstart(
            args.output,
            args.preset,
            data=args.data,
            backbone=args.backbone,
            cross_encoder_steps=args.cross_encoder_steps,
            mice_steps=args.mice_steps,
        )
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
