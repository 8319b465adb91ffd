"""Broad English text for ``mice distill-embedder --embedding-texts``: WordNet's glosses, one synset a line.

    python scripts/wordnet_texts.py --output glosses.txt [--wordnet /usr/share/wordnet] [--count 40000]

Each line is a synset's lemmas and gloss, e.g. ``mitosis: cell division in which the nucleus divides into nuclei
containing the same number of chromosomes``: 117,659 short definitions that span science, technology and everyday
language, where a domain's own training text is narrow. The files are those of Debian's ``wordnet-base``
(``apt-get install wordnet-base``; WordNet 3.0, Princeton's licence). The lines are shuffled with ``--seed`` so that
``--count`` takes a sample of every part of speech, and written atomically.

The data files are read by the Entity Lens's WordNet reader (``entity_lens.data.read_wordnet``): nltk's needs files
Debian's package lacks (``lexnames``) and refuses folders outside its own data paths.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from entity_lens.data import read_wordnet
from ranking_data.work_folders import atomic_write_text

PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")


def synset_texts(data_file: Path) -> list[str]:
    """``"lemma, lemma: gloss"`` for every synset of a WordNet ``data.POS`` file (``entity_lens.data.read_wordnet``
    parses it; adjective lemmas lose their syntactic marker, ``galore(ip)``)."""
    return [
        f"{', '.join(dict.fromkeys(lemma.split('(')[0] for lemma in lemmas))}: {gloss}"
        for lemmas, gloss, _ in read_wordnet(data_file)
    ]


def wordnet_texts(folder: Path, seed: int = 0) -> list[str]:
    """Every synset's text of the four parts of speech, shuffled with ``seed``.

    Raises:
        FileNotFoundError: a ``data.POS`` file is missing from ``folder``.
    """
    missing = [pos for pos in PARTS_OF_SPEECH if not (folder / f"data.{pos}").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} has no WordNet data.{missing[0]}: install Debian's wordnet-base or pass --wordnet FOLDER"
        )
    texts = [text for pos in PARTS_OF_SPEECH for text in synset_texts(folder / f"data.{pos}")]
    random.Random(seed).shuffle(texts)
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="the text file written (one text a line)")
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet's dict folder")
    parser.add_argument("--count", type=int, help="keep this many lines of the shuffled glosses (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    try:
        texts = wordnet_texts(args.wordnet, args.seed)[: args.count]
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, IndexError) as error:
        print(f"error: {args.wordnet} holds files that are not WordNet data files ({error})", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, "\n".join(texts) + "\n")
    print(f"wrote {len(texts)} texts to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
