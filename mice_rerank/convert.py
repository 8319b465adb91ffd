"""``mice convert``: turn a trained cross-encoder into a MICE model that ranks like it (``trainers.conversion``).

Example::

    mice convert --cross-encoder my-cross-encoder --data my-beir-folder --output my-mice

Only the corpus is required in ``--data``: without queries, pseudo-queries are made from the documents. Running the
same command again after an interruption resumes (finished parent scores and the last checkpoint are kept).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from transformers import HfArgumentParser

from trainers.conversion import ConversionConfig, ConversionError, convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every field of ConversionConfig is a flag (dashes or underscores), with its type, default and help.
    parser._add_container_actions(HfArgumentParser(ConversionConfig, add_help=False))


def run(args: argparse.Namespace) -> int:
    try:
        config = ConversionConfig(**{f.name: getattr(args, f.name) for f in fields(ConversionConfig)})
        result = convert(config)
    except ConversionError as error:
        print(f"mice convert: error: {error}")
        return 2
    except KeyboardInterrupt:
        print("mice convert: interrupted; run the same command again to resume from the last checkpoint")
        return 130
    conversion = result.record["conversion"]
    print(
        json.dumps(
            {
                "output": result.output,
                "fusion_layer": conversion["fusion_layer"],
                "interaction_layers": conversion["interaction_layers"],
                "agreement_with_parent": conversion["agreement_with_parent"],
            }
        )
    )
    return 0
