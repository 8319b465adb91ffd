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
    from serving import cli as serving_cli

    serving_cli.add_serve_arguments(
        commands.add_parser("serve", help="HTTP /rerank server (TEI and Cohere/Jina shapes)")
    )
    serving_cli.add_export_arguments(commands.add_parser("export-onnx", help="ONNX graphs (fp32, int8) of a model"))
    args = parser.parse_args(argv)
    if args.command in ("serve", "export-onnx"):
        return serving_cli.run_serve(args) if args.command == "serve" else serving_cli.run_export(args)
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
