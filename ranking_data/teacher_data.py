"""Teacher-score datasets: one schema for every source, saved as three configs and joined lazily at training time.

The layout follows PyLate's knowledge-distillation datasets (``docs/design.md``):

- ``train``: ``query_id: str``, ``document_ids: list[str]``, ``scores: list[float]`` (higher is better) and/or
  ``ranks: list[int]`` (1 = best), optionally ``labels: list[int]`` (human relevance from the qrels);
- ``queries``: ``query_id: str``, ``text: str``;
- ``documents``: ``document_id: str``, ``text: str``.

Texts are stored once, however many lists name them. :meth:`TeacherDataset.training_rows` joins them lazily
(``datasets.Dataset.with_transform``), so a row is only materialised when the trainer reads it:
``{"query": str, "documents": list[str], "scores": list[float], ["ranks": list[int]], ["labels": list[int]]}``.

:func:`build_teacher_dataset` scores candidate lists with any :class:`~ranking_data.teachers.Teacher`, batch by batch,
writing each finished batch to a shard folder so that an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .work_folders import atomic_write_text

if TYPE_CHECKING:
    from .bm25 import BM25Retriever
    from .candidates import CandidateList
    from .teachers import Teacher

CONFIG_NAMES = ("train", "queries", "documents")
METADATA_FILE = "teacher_dataset.json"

TRAIN_FEATURES = {
    "query_id": datasets.Value("string"),
    "document_ids": datasets.List(datasets.Value("string")),
    "scores": datasets.List(datasets.Value("float64")),
    "ranks": datasets.List(datasets.Value("int32")),
    "labels": datasets.List(datasets.Value("int32")),
}
QUERY_FEATURES = datasets.Features({"query_id": datasets.Value("string"), "text": datasets.Value("string")})
DOCUMENT_FEATURES = datasets.Features({"document_id": datasets.Value("string"), "text": datasets.Value("string")})


class TeacherDataError(ValueError):
    """A teacher-score dataset that breaks the schema; the message names the offending row."""


def train_features(columns: Iterable[str]) -> datasets.Features:
    """The ``train`` features for the given subset of columns (``query_id`` and ``document_ids`` always)."""
    unknown = sorted(set(columns) - set(TRAIN_FEATURES))
    if unknown:
        raise TeacherDataError(f"unknown train column(s) {unknown}; the schema has {list(TRAIN_FEATURES)}")
    return datasets.Features({name: feature for name, feature in TRAIN_FEATURES.items() if name in columns})


def arrow_table(dataset: datasets.Dataset) -> pa.Table:
    """A dataset's rows as one Arrow table, honouring a ``select``/``filter`` indices mapping."""
    return dataset.with_format("arrow")[:]


def _row_name(table: pa.Table, row: int) -> str:
    return f"train row {row} (query_id {table.column('query_id')[row].as_py()!r})"


def _first_true(mask: pa.Array) -> int | None:
    positions = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    return int(positions[0]) if len(positions) else None


def validate_teacher_dataset(train: datasets.Dataset, queries: datasets.Dataset, documents: datasets.Dataset) -> None:
    """Check the three configs against the schema; raise :class:`TeacherDataError` naming the first bad row.

    Checked: a non-empty ``train`` with ``query_id``, ``document_ids`` and ``scores`` and/or ``ranks``; list columns of
    equal, non-zero length per row; no repeated document in a list; finite scores; ranks ≥ 1; unique, non-null ids
    and texts in ``queries`` and ``documents``; every id named in ``train`` present in ``queries``/``documents``.
    Runs on Arrow columns, so it stays fast on MS MARCO-sized data.
    """
    if len(train) == 0:
        raise TeacherDataError(
            "the training set is empty: no query has a candidate list (check the split, the first-stage run and the "
            "teacher file)"
        )
    missing = [name for name in ("query_id", "document_ids") if name not in train.column_names]
    if missing or not {"scores", "ranks"} & set(train.column_names):
        raise TeacherDataError(
            f"train has columns {train.column_names}; it needs query_id, document_ids and scores and/or ranks"
        )
    table = arrow_table(train)
    id_columns = {}
    for name, config, id_column in (("queries", queries, "query_id"), ("documents", documents, "document_id")):
        if config.column_names[:2] != [id_column, "text"]:
            raise TeacherDataError(f"{name} has columns {config.column_names}; expected [{id_column!r}, 'text']")
        config_table = arrow_table(config)
        ids = id_columns[name] = config_table.column(id_column)
        for column in (id_column, "text"):
            row = _first_true(pc.is_null(config_table.column(column)))
            if row is not None:
                raise TeacherDataError(f"{name} row {row} has no {column}")
        if pc.count_distinct(ids).as_py() != len(ids):
            counts = pc.value_counts(ids)
            repeated = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
            raise TeacherDataError(f"{name} holds the id {repeated!r} more than once; ids must be unique")

    null_query = _first_true(pc.is_null(table.column("query_id")))
    if null_query is not None:
        raise TeacherDataError(f"train row {null_query} has no query_id")
    lengths = pc.list_value_length(table.column("document_ids")).fill_null(0)
    empty = _first_true(pc.equal(lengths, 0))
    if empty is not None:
        raise TeacherDataError(f"{_row_name(table, empty)} has an empty document list")
    for column in ("scores", "ranks", "labels"):
        if column in table.column_names:
            mismatch = _first_true(pc.not_equal(pc.list_value_length(table.column(column)).fill_null(-1), lengths))
            if mismatch is not None:
                raise TeacherDataError(
                    f"{_row_name(table, mismatch)} has {len(table.column(column)[mismatch].values)} {column} "
                    f"for {lengths[mismatch].as_py()} documents; every list column needs one value per document"
                )

    def first_bad_row(column: str, bad_values: pa.Array) -> int | None:
        flat_row = _first_true(bad_values.fill_null(True))
        if flat_row is None:
            return None
        return int(pc.list_parent_indices(table.column(column))[flat_row].as_py())

    if "scores" in table.column_names:
        scores = pc.list_flatten(table.column("scores"))
        row = first_bad_row("scores", pc.invert(pc.is_finite(scores)))
        if row is not None:
            values = table.column("scores")[row].as_py()
            raise TeacherDataError(
                f"{_row_name(table, row)} has a NaN, infinite or missing score ({values}); "
                "fix or drop it: a teacher score must be a finite number"
            )
    if "ranks" in table.column_names:
        row = first_bad_row("ranks", pc.less(pc.list_flatten(table.column("ranks")), 1))
        if row is not None:
            raise TeacherDataError(f"{_row_name(table, row)} has a rank below 1 or missing; ranks start at 1")

    row = first_bad_row(
        "document_ids",
        pc.invert(pc.is_in(pc.list_flatten(table.column("document_ids")), value_set=id_columns["documents"])),
    )
    if row is not None:
        known = set(id_columns["documents"].to_pylist())
        unknown = [d for d in table.column("document_ids")[row].as_py() if d not in known]
        raise TeacherDataError(
            f"{_row_name(table, row)} names document id(s) {unknown[:5]} missing from the documents config"
        )
    row = _first_true(pc.invert(pc.is_in(table.column("query_id"), value_set=id_columns["queries"])))
    if row is not None:
        raise TeacherDataError(f"{_row_name(table, row)}: the query id is missing from the queries config")
    for row, ids in enumerate(table.column("document_ids").to_pylist()):
        if len(set(ids)) != len(ids):
            repeated = next(d for d in ids if ids.count(d) > 1)
            raise TeacherDataError(f"{_row_name(table, row)} lists document {repeated!r} more than once")


@dataclass
class TeacherDataset:
    """The three configs of a teacher-score dataset, validated on construction.

    Example:
        >>> data = TeacherDataset.from_records(
        ...     [{"query_id": "q1", "document_ids": ["d1", "d2"], "scores": [3.0, 1.0]}],
        ...     queries={"q1": "purring cats"}, documents={"d1": "cats purr", "d2": "dogs bark"})
        >>> data.save_to_disk("kd")  # DatasetDict folder: train/, queries/, documents/
        >>> rows = TeacherDataset.load_from_disk("kd").training_rows(list_size=2)
        >>> rows[0]
        {'query': 'purring cats', 'documents': ['cats purr', 'dogs bark'], 'scores': [3.0, 1.0]}
    """

    train: datasets.Dataset
    queries: datasets.Dataset
    documents: datasets.Dataset
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_teacher_dataset(self.train, self.queries, self.documents)

    @classmethod
    def from_records(
        cls,
        rows: Iterable[Mapping[str, Any]],
        queries: Mapping[str, str],
        documents: Mapping[str, str],
        metadata: Mapping[str, Any] | None = None,
    ) -> TeacherDataset:
        """Build from ``train`` rows (dicts in the schema) and id → text maps.

        Only the queries and documents that the rows name are kept, so passing a whole collection is fine.
        """
        rows = list(rows)
        columns = list(rows[0]) if rows else ["query_id", "document_ids", "scores"]
        for number, row in enumerate(rows):
            if set(row) != set(columns):
                raise TeacherDataError(f"train row {number} has columns {list(row)}; row 0 has {columns}")
        features = train_features(columns)
        train = datasets.Dataset.from_dict({c: [row[c] for row in rows] for c in features}, features=features)
        query_ids = list(dict.fromkeys(row["query_id"] for row in rows))
        document_ids = list(dict.fromkeys(d for row in rows for d in row["document_ids"]))
        query_table = {"query_id": query_ids, "text": [queries.get(q) for q in query_ids]}
        document_table = {"document_id": document_ids, "text": [documents.get(d) for d in document_ids]}
        missing_query = next((q for q, text in zip(*query_table.values(), strict=True) if text is None), None)
        if missing_query is not None:
            row = next(i for i, r in enumerate(rows) if r["query_id"] == missing_query)
            raise TeacherDataError(f"train row {row} (query_id {missing_query!r}): the query id has no text")
        missing_document = next((d for d, text in zip(*document_table.values(), strict=True) if text is None), None)
        if missing_document is not None:
            row = next(i for i, r in enumerate(rows) if missing_document in r["document_ids"])
            raise TeacherDataError(
                f"train row {row} (query_id {rows[row]['query_id']!r}) names document id {missing_document!r} "
                "missing from the documents"
            )
        return cls(
            train,
            datasets.Dataset.from_dict(query_table, features=QUERY_FEATURES),
            datasets.Dataset.from_dict(document_table, features=DOCUMENT_FEATURES),
            dict(metadata or {}),
        )

    def hub_configs(self) -> dict[str, datasets.Dataset]:
        """The three configs by name, ready for ``dataset.push_to_hub(repo_id, config_name=name)``."""
        return {"train": self.train, "queries": self.queries, "documents": self.documents}

    def save_to_disk(self, folder: str | Path) -> None:
        """Save as a ``datasets.DatasetDict`` folder (``train/``, ``queries/``, ``documents/``) plus metadata."""
        folder = Path(folder)
        datasets.DatasetDict(self.hub_configs()).save_to_disk(str(folder))
        (folder / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load_from_disk(cls, folder: str | Path) -> TeacherDataset:
        """Load a folder written by :meth:`save_to_disk` (``datasets.load_from_disk`` reads it too)."""
        folder = Path(folder)
        if not (folder / "dataset_dict.json").is_file():
            raise TeacherDataError(f"{folder} is not a saved teacher dataset (no dataset_dict.json)")
        configs = datasets.load_from_disk(str(folder))
        missing = [name for name in CONFIG_NAMES if name not in configs]
        if missing:
            raise TeacherDataError(f"{folder} lacks the config(s) {missing}; a teacher dataset has {CONFIG_NAMES}")
        metadata_path = folder / METADATA_FILE
        metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.is_file() else {}
        return cls(configs["train"], configs["queries"], configs["documents"], metadata)

    @classmethod
    def from_hub(cls, repo_id: str, revision: str | None = None) -> TeacherDataset:
        """Load the three configs pushed with ``push_to_hub(repo_id, config_name=...)`` (or a local repo folder)."""
        configs = {
            name: datasets.load_dataset(repo_id, name, split="train", revision=revision) for name in CONFIG_NAMES
        }
        return cls(configs["train"], configs["queries"], configs["documents"], {"source": repo_id})

    def training_rows(
        self,
        list_size: int | None = None,
        sampling: Literal["top", "random"] = "top",
        require_positive: bool = False,
        seed: int = 0,
    ) -> datasets.Dataset:
        """The ``train`` config joined lazily with the texts, as training rows (see the module docstring).

        Args:
            list_size: documents per row; ``None`` keeps whole lists. A list shorter than this raises
                :class:`TeacherDataError` naming the query.
            sampling: ``"top"`` keeps the first ``list_size`` documents of each list (lists are stored in teacher
                order); ``"random"`` draws ``list_size`` of them, a fixed draw per (seed, query id) so that a
                resumed training run sees the same rows. The chosen documents keep their dataset order.
            require_positive: make every row hold a document with label > 0 (the best-ranked positive replaces
                the last chosen document if none was chosen); for InfoNCE/BCE/Hinge on human labels.
            seed: seed of the random draw.
        """
        if sampling not in ("top", "random"):
            raise ValueError(f"sampling must be 'top' or 'random', not {sampling!r}")
        table = arrow_table(self.train)
        if list_size is not None:
            if list_size < 1:
                raise ValueError(f"list_size must be at least 1, got {list_size}")
            short = _first_true(pc.less(pc.list_value_length(table.column("document_ids")), list_size))
            if short is not None:
                length = len(table.column("document_ids")[short])
                raise TeacherDataError(
                    f"{_row_name(table, short)} has {length} documents, fewer than the list size {list_size}; "
                    "lower the list size, mine deeper candidates, or filter short lists out"
                )
        if require_positive:
            if "labels" not in table.column_names:
                raise TeacherDataError(
                    "require_positive needs a labels column (human relevance); this dataset has none"
                )
            labels = table.column("labels")
            has_positive = np.zeros(len(table), dtype=bool)
            has_positive[pc.list_parent_indices(labels).filter(pc.greater(pc.list_flatten(labels), 0)).to_numpy()] = (
                True
            )
            row = _first_true(pa.array(~has_positive))
            if row is not None:
                raise TeacherDataError(
                    f"{_row_name(table, row)} has no document with label > 0, but require_positive=True"
                )
        return self.train.with_transform(
            TrainingRowJoin(self.queries, self.documents, list_size, sampling, require_positive, seed)
        )


class TrainingRowJoin:
    """The lazy join behind :meth:`TeacherDataset.training_rows`: ids → texts, plus list sampling, per batch."""

    def __init__(
        self,
        queries: datasets.Dataset,
        documents: datasets.Dataset,
        list_size: int | None,
        sampling: str,
        require_positive: bool,
        seed: int,
    ):
        self.query_texts = queries.with_format(None)
        self.document_texts = documents.with_format(None)
        # Row positions rather than texts: the texts stay in Arrow memory (memory-mapped when loaded from disk).
        self.query_rows = {query_id: row for row, query_id in enumerate(arrow_table(queries).column(0).to_pylist())}
        self.document_rows = {doc_id: row for row, doc_id in enumerate(arrow_table(documents).column(0).to_pylist())}
        self.list_size, self.sampling, self.require_positive, self.seed = list_size, sampling, require_positive, seed

    def choose(self, query_id: str, labels: Sequence[int] | None, length: int) -> list[int]:
        """Positions (in dataset order) of the documents kept for one list."""
        size = self.list_size or length
        if self.sampling == "random" and size < length:
            generator = np.random.default_rng([self.seed, zlib.crc32(query_id.encode("utf-8"))])
            chosen = sorted(generator.choice(length, size=size, replace=False).tolist())
        else:
            chosen = list(range(size))
        if self.require_positive:
            # training_rows checked that every list holds a positive.
            positives = [i for i, label in enumerate(labels) if label > 0]
            if not set(chosen) & set(positives):
                chosen = sorted([*chosen[:-1], positives[0]])
        return chosen

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        output: dict[str, list] = {"query": [], "documents": []}
        list_columns = [c for c in ("scores", "ranks", "labels") if c in batch]
        output.update({c: [] for c in list_columns})
        query_rows = [self.query_rows[q] for q in batch["query_id"]]
        output["query"] = self.query_texts[query_rows]["text"]
        for index, (query_id, document_ids) in enumerate(zip(batch["query_id"], batch["document_ids"], strict=True)):
            labels = batch["labels"][index] if "labels" in batch else None
            chosen = self.choose(query_id, labels, len(document_ids))
            rows = [self.document_rows[document_ids[i]] for i in chosen]
            output["documents"].append(self.document_texts[rows]["text"])
            for column in list_columns:
                values = batch[column][index]
                output[column].append([values[i] for i in chosen])
        return output


def build_teacher_dataset(
    candidates: Sequence[CandidateList],
    queries: Mapping[str, str],
    documents: Mapping[str, str],
    teacher: Teacher,
    shard_folder: str | Path,
    batch_size: int = 32,
    resume: bool = True,
    show_progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> TeacherDataset:
    """Score every candidate list with ``teacher`` and return the teacher dataset (lists in teacher order).

    Batches of ``batch_size`` queries are scored one at a time; each finished batch is written atomically to
    ``shard_folder/batch-NNNNNN.json``. With ``resume=True`` a later call with the same candidates and teacher
    skips the batches already there, so an interrupted build (crash, Ctrl-C, pre-empted job) loses at most one
    batch. The folder also records what was being built; resuming with other inputs raises instead of mixing them.
    Delete the shard folder once the dataset is saved.

    Raises:
        TeacherDataError: no candidates, or a teacher that returns a wrong number of scores or a non-finite one.
    """
    if not candidates:
        raise TeacherDataError(
            "the training set is empty: there are no candidate lists to score (check the split and the first stage)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    shard_folder = Path(shard_folder)
    fingerprint = hashlib.sha256(
        json.dumps([[c.query_id, c.document_ids, c.labels] for c in candidates]).encode("utf-8")
    ).hexdigest()
    manifest = {"fingerprint": fingerprint, "teacher": teacher.name, "batch_size": batch_size}
    manifest_path = shard_folder / "manifest.json"
    if shard_folder.exists() and not resume:
        shutil.rmtree(shard_folder)
    shard_folder.mkdir(parents=True, exist_ok=True)
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        if previous != manifest:
            raise TeacherDataError(
                f"{shard_folder} holds shards of another build ({previous}, now {manifest}); "
                "delete the folder or pass resume=False to start over"
            )
    else:
        atomic_write_text(manifest_path, json.dumps(manifest))

    batches = [candidates[start : start + batch_size] for start in range(0, len(candidates), batch_size)]
    shard_paths = [shard_folder / f"batch-{number:06d}.json" for number in range(len(batches))]
    done = sum(path.is_file() for path in shard_paths)
    progress = tqdm(total=len(batches), initial=done, desc=f"scoring with {teacher.name}", disable=not show_progress)
    for batch, path in zip(batches, shard_paths, strict=True):
        if path.is_file():
            continue
        batch_scores = teacher.score([queries[c.query_id] for c in batch], [c.document_ids for c in batch], documents)
        rows = []
        for candidate, scores in zip(batch, batch_scores, strict=True):
            scores = np.asarray(scores, dtype=np.float64)
            if scores.shape != (len(candidate.document_ids),) or not np.isfinite(scores).all():
                raise TeacherDataError(
                    f"teacher {teacher.name} returned {scores.tolist()} for query_id {candidate.query_id!r} with "
                    f"{len(candidate.document_ids)} documents; it must return one finite score per document"
                )
            # Teacher order: best first; a stable sort keeps the first stage's order among ties.
            order = np.argsort(-scores, kind="stable").tolist()
            rows.append(
                {
                    "query_id": candidate.query_id,
                    "document_ids": [candidate.document_ids[i] for i in order],
                    "scores": [float(scores[i]) for i in order],
                    "labels": [candidate.labels[i] for i in order],
                }
            )
        atomic_write_text(path, json.dumps(rows))
        progress.update()
    progress.close()

    rows = [row for path in shard_paths for row in json.loads(path.read_text(encoding="utf-8"))]
    return TeacherDataset.from_records(
        rows, queries, documents, {"teacher": teacher.describe(), **dict(metadata or {})}
    )


def build_from_beir(
    folder: str | Path,
    output: str | Path,
    *,
    split: str = "train",
    teacher: Teacher | Callable[[BM25Retriever], Teacher] | None = None,
    depth: int = 100,
    run_file: str | Path | None = None,
    keep_positives: bool = True,
    max_queries: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    resume: bool = True,
    show_progress: bool = True,
) -> TeacherDataset:
    """Mine candidates for a BEIR split, score them, and save the teacher dataset to ``output``.

    The one-call pipeline behind ``scripts/build_teacher_dataset.py`` and the quickstart. Finished batches are
    kept in ``<output>.partial/`` until the dataset is saved, so calling it again after an interruption resumes.

    Args:
        folder: BEIR-layout folder.
        output: where the dataset is saved (``datasets.DatasetDict`` folder: ``train/``, ``queries/``, ``documents/``).
        split: the qrels split whose queries get lists.
        teacher: a :class:`~ranking_data.teachers.Teacher`, or a function of the corpus's BM25 index returning one (so
            BM25 teachers share the miner's index); default: :func:`~ranking_data.teachers.offline_teacher`.
        depth: candidates per query.
        run_file: first-stage TREC run; default BM25 (bm25s) over the corpus.
        keep_positives: put judged positives the first stage missed in the lists.
        max_queries: use a reproducible random sample of this many queries of the split (quick runs).
        seed: seed of that sample.
        batch_size: queries per scored (and resumable) batch.
        resume: reuse finished batches of an earlier, interrupted call.
        show_progress: show a progress bar.
    """
    from .beir import load_beir, subsample_queries
    from .bm25 import BM25Retriever
    from .candidates import candidates_from_run_file, mine_bm25_candidates
    from .teachers import Teacher, offline_teacher

    data = load_beir(folder, split)
    # Query ids are often sorted by topic (package names here): a random sample, not the first ones.
    data = subsample_queries(data, max_queries, seed)
    retriever = BM25Retriever().index(data.corpus)
    if teacher is None:
        teacher = offline_teacher(retriever)
    elif not isinstance(teacher, Teacher):
        teacher = teacher(retriever)
    if run_file is not None:
        candidates = candidates_from_run_file(run_file, data, depth, keep_positives)
    else:
        candidates = mine_bm25_candidates(data, depth, retriever, keep_positives)
    first_stage = Path(run_file).name if run_file is not None else "BM25"
    output = Path(output)
    shards = output.with_name(output.name + ".partial")
    dataset = build_teacher_dataset(
        candidates,
        data.all_queries,
        {doc_id: data.document_text(doc_id) for doc_id in data.corpus},
        teacher,
        shards,
        batch_size=batch_size,
        resume=resume,
        show_progress=show_progress,
        metadata={
            "source": data.name,
            "data": {"dataset": data.name, "split": split, "queries": len(candidates)},
            "candidates": {
                "first_stage": first_stage,
                "depth": depth,
                "positives_added": keep_positives,
                "description": f"{first_stage} top-{depth}" + (", judged positives kept" if keep_positives else ""),
            },
        },
    )
    dataset.save_to_disk(output)
    shutil.rmtree(shards)
    return dataset
