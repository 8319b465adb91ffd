"""Build the small Debian sample collection that ships with the package.

It is a reproducible subsample of ``../shared/data/debian-known-item`` (Debian package descriptions,
redistributable with Debian): sampled train/dev/test queries, their relevant documents, their sibling
packages (``foo``, ``foo-data``, ``libfoo``... share most of their text, so they are real hard
negatives) and random fill documents.

    python scripts/make_sample_data.py --source ../shared/data/debian-known-item
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "mice_rerank" / "sample_data" / "debian"


def read_jsonl(path: Path) -> dict[str, dict]:
    with path.open(encoding="utf-8") as handle:
        rows = (json.loads(line) for line in handle if line.strip())
        return {row["_id"]: row for row in rows}


def read_qrels(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as handle:
        return {row["query-id"]: row["corpus-id"] for row in csv.DictReader(handle, delimiter="\t")}


def family(package: str) -> str:
    """The stem shared by sibling packages: ``libfoo2-dev`` and ``foo-data`` both give ``foo``."""
    stem = re.sub(r"^lib", "", package)
    return re.split(r"[-.0-9]", stem, maxsplit=1)[0] or package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--train", type=int, default=600, help="train queries that choose the corpus (with siblings)")
    parser.add_argument("--dev", type=int, default=60)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--train-from-corpus",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train split: every source train query whose document is in the sample (not only the --train sampled)",
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    corpus = read_jsonl(args.source / "corpus.jsonl")
    queries = read_jsonl(args.source / "queries.jsonl")
    by_family: dict[str, list[str]] = {}
    for doc_id in corpus:
        by_family.setdefault(family(doc_id), []).append(doc_id)

    qrels = {}
    for split, size in (("train", args.train), ("dev", args.dev), ("test", args.test)):
        split_qrels = read_qrels(args.source / "qrels" / f"{split}.tsv")
        # Prefer queries whose package has siblings: they make the re-ranking task non-trivial.
        with_siblings = sorted(q for q, d in split_qrels.items() if len(by_family[family(d)]) > 1)
        chosen = rng.sample(with_siblings, size)
        qrels[split] = {q: split_qrels[q] for q in sorted(chosen)}

    keep: set[str] = set()
    for split_qrels in qrels.values():
        for doc_id in split_qrels.values():
            keep.add(doc_id)
            keep.update(by_family[family(doc_id)][:8])
    rest = sorted(set(corpus) - keep)
    keep.update(rng.sample(rest, max(0, args.documents - len(keep))))
    if args.train_from_corpus:
        # Every kept document whose package is a train query of the source becomes a train query too: more
        # training queries without a larger corpus (dev and test packages are never train queries in the source).
        source_train = read_qrels(args.source / "qrels" / "train.tsv")
        qrels["train"] = {q: d for q, d in sorted(source_train.items()) if d in keep}

    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "qrels").mkdir(exist_ok=True)
    with (args.output / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc_id in sorted(keep):
            handle.write(json.dumps(corpus[doc_id], ensure_ascii=False) + "\n")
    query_ids = sorted(q for split_qrels in qrels.values() for q in split_qrels)
    with (args.output / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query_id in query_ids:
            handle.write(json.dumps(queries[query_id], ensure_ascii=False) + "\n")
    for split, split_qrels in qrels.items():
        with (args.output / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for query_id, doc_id in split_qrels.items():
                handle.write(f"{query_id}\t{doc_id}\t1\n")
    print(json.dumps({"documents": len(keep), **{split: len(q) for split, q in qrels.items()}}))


if __name__ == "__main__":
    main()
