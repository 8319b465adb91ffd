"""Turn a trained cross-encoder into a MICE model that ranks like it (``trainers.conversion``); resumable.

    mice convert --cross_encoder my-cross-encoder --data my-beir-folder --output my-mice
    mice convert --cross_encoder my-cross-encoder --data my-corpus --output my-mice --fusion_layer 4 --steps 500

Only the corpus is required in ``--data``: without queries, pseudo-queries are made from the documents. No relevance
labels are read. Running the same command again after an interruption resumes (finished parent scores and the last
checkpoint are kept).
"""

from __future__ import annotations

import argparse
import json

from mice_rerank.cli import add_dataclass_arguments, dataclass_values

ON_INTERRUPT = "interrupted: run the same command again to resume from the finished parent scores and last checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trainers.conversion import ConversionConfig

    add_dataclass_arguments(parser, ConversionConfig, "conversion")


def run(args: argparse.Namespace) -> int:
    from trainers.conversion import ConversionConfig, convert

    result = convert(ConversionConfig(**dataclass_values(args, ConversionConfig)))
    conversion = result.record["conversion"]
    summary = {
        key: conversion[key]
        for key in ("fusion_layer", "interaction_layers", "max_document_length", "agreement_with_parent")
    }
    print(json.dumps({"output": result.output, **summary}))
    return 0
