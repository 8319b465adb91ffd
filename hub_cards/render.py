"""Render a card from a model folder or a teacher-score dataset folder without pushing it.

python -m hub_cards.render mice-quickstart/models/mice --output hub_cards/examples/README.md
python -m hub_cards.render mice-quickstart/teacher_dataset --output teacher_dataset_card.md
python -m hub_cards.render mice-quickstart/models/embedder --output mice-quickstart/models/embedder/README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset_card import render_dataset_card
from .embedder_card import render_embedder_card
from .model_card import render_model_card
from .records import EMBEDDER_RECORD, TRAINING_RECORD, RecordError, read_teacher_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "folder",
        help="a training output (training_record.json), a light dual encoder (embedder_record.json) or a teacher dataset",
    )
    parser.add_argument("--output", required=True, help="where to write the card (README.md)")
    parser.add_argument("--repo-id", help="Hub id shown in the usage snippets")
    parser.add_argument("--evaluation", help="evaluation.json (default: next to the model or two folders up)")
    parser.add_argument("--latency", help="a scripts/bench_latency.py result")
    parser.add_argument("--base-model", help="Hub id of the backbone, when training recorded a local folder")
    parser.add_argument("--license", help="licence of the weights / data")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        shared = {"evaluation": args.evaluation, "repo_id": args.repo_id, "base_model": args.base_model}
        if (folder / EMBEDDER_RECORD).is_file():
            card = render_embedder_card(folder, license=args.license, **shared)
        elif (folder / TRAINING_RECORD).is_file():
            card = render_model_card(folder, latency=args.latency, license=args.license, **shared)
        else:
            card = render_dataset_card(read_teacher_dataset(folder), repo_id=args.repo_id, license=args.license)
    except RecordError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    card.save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
