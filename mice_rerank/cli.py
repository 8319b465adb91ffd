"""The ``mice`` command: one verb per user-facing task, each a thin layer over the Python API of its package.

A verb is a module with ``add_arguments(parser)`` and ``run(args) -> int``; register it in ``COMMANDS`` with a
one-line summary (its module is imported only when the verb runs, so ``mice --help`` stays fast). A verb may set
``ON_INTERRUPT``, the line printed on Ctrl-C (e.g. that a re-run resumes). Errors that report bad input end the
command with one line and a hint (``ERROR_HINTS``), never a traceback; ``mice --traceback VERB ...`` shows it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import logging
import sys
import typing
from collections.abc import Sequence
from types import MappingProxyType, ModuleType

COMMANDS = {
    "quickstart": ("mice_rerank.quickstart", "teacher data, distil MICE and a cross-encoder, evaluate, report"),
    "train": ("mice_rerank.commands.train", "distil a cross-encoder or MICE from a teacher-score dataset"),
    "evaluate": ("mice_rerank.commands.evaluate", "re-rank BEIR folders: metrics, significance, latency"),
    "convert": ("mice_rerank.commands.convert", "turn a trained cross-encoder into a MICE model that ranks like it"),
    "entity-lens": ("entity_lens.cli", "decode an entity's mention from each layer of a language model"),
    "distill-embedder": ("embeddings.cli", "a light dual encoder (DE-2) distilled from a cross-encoder's early layers"),
    "serve": (
        "mice_rerank.commands.serve",
        "HTTP /rerank server (TEI, Cohere/Jina shapes) for MICE or a cross-encoder",
    ),
    "export-onnx": ("mice_rerank.commands.export_onnx", "ONNX graphs (fp32, int8) of a MICE or cross-encoder model"),
    "index": ("indexing.index_command", "encode a corpus once into a searchable MICE index (resumable)"),
    "search": ("indexing.search_command", "search a MICE index: first stage, then MICE re-ranking"),
}

# Exceptions that report bad input, by class path (this module imports none of them), with what to do about it. The
# most specific class of an error's MRO that is listed decides.
ERROR_HINTS = {
    "ranking_data.beir.BeirFormatError": "fix the file named above, or pass another BEIR-layout folder (docs/design.md)",
    "ranking_data.teacher_data.TeacherDataError": "scripts/build_teacher_dataset.py builds a teacher dataset",
    "trainers.config.ConfigError": "`mice train --help` lists the settings and their defaults",
    "evaluation.rerankers.ModelPathError": "pass a folder written by save_pretrained, or a Hub id such as org/name",
    "indexing.store.FingerprintMismatchError": "pass the model the states were stored with, or another store folder",
    "indexing.store.StoreError": "delete the store folder named above (its documents are re-encoded), or pass another",
    "indexing.build.IndexBuildError": "`mice index --help`; the same command again resumes an interrupted build",
    "indexing.codecs.CodecError": "the compression is float32, float16, int8, pqM or opqM (e.g. opq64)",
    "indexing.mice_index.EmptyIndexError": "build the index with `mice index` first",
    "trainers.conversion.ConversionError": "`mice convert --help` lists the settings and what each expects",
    "hub_cards.records.RecordError": "the folder must hold what a training or evaluation run writes",
    "embeddings.early_layers.EarlyLayerError": "pass a cross-encoder or MICE folder, with at most as many layers as it has",
    "evaluation.first_stage.FirstStageError": "the first stage is bm25, dense:PATH or hybrid:PATH (a SentenceTransformer)",
    "serving.onnx_export.OnnxExportError": "`mice export-onnx --model MODEL` writes the graphs the ONNX backends read",
    "entity_lens.errors.EntityLensError": "`mice entity-lens --help` lists the options and what each expects",
    "ranking_data.work_folders.WorkFolderError": "or pass another output folder",
    "builtins.FileNotFoundError": "check the path",
    "builtins.ValueError": "check the arguments (`mice COMMAND --help`)",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mice VERB ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((token for token in argv if not token.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="mice", description="MICE re-rankers: train, evaluate, report.")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    module = None
    try:
        for name, (module_name, summary) in COMMANDS.items():
            if name == verb:
                module = importlib.import_module(module_name)
                command = commands.add_parser(
                    name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
                )
                module.add_arguments(command)
            else:
                commands.add_parser(name, help=summary)
    except KeyboardInterrupt:  # while the verb's packages were being imported: nothing has started yet
        print("\ninterrupted", file=sys.stderr)
        return 130
    return run_command(module, parser.parse_args(argv))


def script_main(module_name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run one verb's module as a script (``scripts/train.py`` is ``mice train``), with the same error handling."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=prog, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    module.add_arguments(parser)
    return run_command(module, parser.parse_args(argv))


def run_command(module: ModuleType, args: argparse.Namespace) -> int:
    """``module.run(args)``: known errors and Ctrl-C as one line and a hint (exit 2 and 130), never a traceback."""
    # The handler's own level too: some libraries (bm25s) set their loggers to DEBUG.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        return module.run(args)
    except KeyboardInterrupt:
        print(f"\n{getattr(module, 'ON_INTERRUPT', 'interrupted')}", file=sys.stderr)
        return 130
    except Exception as error:
        if args.traceback:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        hint = error_hint(error)
        if hint is not None:
            print(f"error: {message}\nhint: {hint}", file=sys.stderr)
            return 2
        print(f"error: {type(error).__name__}: {message}", file=sys.stderr)
        print("hint: this looks like a bug: run again with --traceback to see where, and report it", file=sys.stderr)
        return 1


def error_hint(error: BaseException) -> str | None:
    """The hint of the most specific listed class of ``error``, or None for an unexpected error."""
    for cls in type(error).__mro__:
        hint = ERROR_HINTS.get(f"{cls.__module__}.{cls.__qualname__}")
        if hint:
            return hint
    return None


def add_dataclass_arguments(parser: argparse.ArgumentParser, section: type, title: str | None = None) -> list[str]:
    """Add a flag for every field of the dataclass ``section``, as transformers' ``HfArgumentParser`` makes them.

    A flag left out is left out of the namespace too (``argparse.SUPPRESS``), so that a verb can tell the settings
    given on the command line from the defaults (a config file's values fill the rest); the help says each default.
    Returns the field names.
    """
    from transformers import HfArgumentParser

    group = parser.add_argument_group(title or section.__name__, (section.__doc__ or "").strip().split("\n")[0])
    hints = typing.get_type_hints(section)
    names = []
    for field in dataclasses.fields(section):
        if field.init:
            HfArgumentParser._parse_dataclass_field(_Suppressed(group), _flag_field(field, hints[field.name]))
            names.append(field.name)
    return names


def dataclass_values(args: argparse.Namespace, *sections: type) -> dict:
    """The flags given for fields of ``sections`` (those added by ``add_dataclass_arguments``), by field name."""
    names = {field.name for section in sections for field in dataclasses.fields(section)}
    return {name: value for name, value in vars(args).items() if name in names}


class _Suppressed:
    """Adds arguments to ``group`` with ``argparse.SUPPRESS`` as their default (absent flags stay absent)."""

    def __init__(self, group) -> None:
        self.group = group

    def add_argument(self, *names: str, **options) -> argparse.Action:
        return self.group.add_argument(*names, **{**options, "default": argparse.SUPPRESS})


def _flag_field(field: dataclasses.Field, hint: type) -> dataclasses.Field:
    """A copy of ``field`` with its resolved type and its default in the help."""
    flag = copy.copy(field)
    flag.type = hint
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    shown = "" if default is dataclasses.MISSING else f" (default: {default})"
    flag.metadata = MappingProxyType(
        {**field.metadata, "help": field.metadata.get("help", "") + shown.replace("%", "%%")}
    )
    return flag


if __name__ == "__main__":  # python -m mice_rerank.cli VERB ... (e.g. under accelerate launch)
    sys.exit(main())
