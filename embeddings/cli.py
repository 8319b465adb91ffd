"""``mice distill-embedder``: build a light dual encoder (DE-2) from a trained cross-encoder and distil it.

    mice distill-embedder --cross-encoder CE_DIR --data BEIR_DIR --output OUT [--layers 2]
    mice distill-embedder --preset quickstart --cross-encoder CE_DIR --data BEIR_DIR --output OUT

Writes a ``SentenceTransformer`` folder with its model card (``README.md``, rendered by ``hub_cards``); teacher
scores and checkpoints go to ``OUT-work`` (``--work-folder``), and a re-run resumes from the last checkpoint.
A thin layer over :func:`embeddings.distillation.distill_embedder`; every flag is a field of
:class:`~embeddings.distillation.EmbedderDistillationConfig`.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from .distillation import PRESETS, EmbedderDistillationConfig, config_from_preset, distill_embedder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (``--cross-encoder``, ``--layers``, ...), plus ``--preset``."""
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset (flags override it)")
    hints = typing.get_type_hints(EmbedderDistillationConfig)
    for item in fields(EmbedderDistillationConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = hints[item.name]
        if typing.get_origin(kind) is not typing.Literal:  # `X | None` -> X
            kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        base = kind
        help_text = item.metadata.get("help", "")
        required = item.default is MISSING
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(base) is typing.Literal:
            parser.add_argument(flag, choices=typing.get_args(base), default=None, help=help_text)
        else:
            suffix = "" if required or item.default is None else f" (default: {item.default})"
            parser.add_argument(flag, type=base, default=None, required=required, help=help_text + suffix)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> EmbedderDistillationConfig:
    settings = {item.name: getattr(args, item.name) for item in fields(EmbedderDistillationConfig)}
    if args.preset:
        return config_from_preset(args.preset, **settings)
    return EmbedderDistillationConfig(**{k: v for k, v in settings.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Distil, then render the card into the output folder; one-line errors for bad input."""
    from hub_cards import RecordError, render_embedder_card
    from ranking_data.beir import BeirFormatError
    from ranking_data.teacher_data import TeacherDataError

    from .early_layers import EarlyLayerError

    try:
        output = distill_embedder(config_from_args(args), show_progress=not args.quiet)
        render_embedder_card(output).save(str(Path(output) / "README.md"))
    except (EarlyLayerError, BeirFormatError, TeacherDataError, RecordError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
