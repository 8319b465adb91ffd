"""The ``mice`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from indexing import index_command, search_command

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
    verbs = {"index": index_command, "search": search_command}
    for name, verb in verbs.items():
        verb.add_arguments(commands.add_parser(name, help=verb.HELP, description=verb.__doc__))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command in verbs:
        return verbs[args.command].run(args)
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
