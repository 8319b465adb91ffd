"""Task vectors: one learned vector v per layer (optionally with a d×d affine map on the representation), saved as
safetensors with a JSON record, loaded from a folder, the Hub, or the copies packaged with this library.

Folder layout (what `save` writes and the Hub repository holds):
- `task_vectors.safetensors`: `layers.{ℓ}.vector` (d_model,) and, for the linear-map variant,
  `layers.{ℓ}.linear.weight` (d_model, d_model) and `layers.{ℓ}.linear.bias` (d_model,), float32;
- `entity_lens.json`: the model they were trained on, d_model, layers, mode, pooling, task, the decoding prompt, and
  the training and evaluation record (per layer).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from .errors import EntityLensError
from .hooks import check_layers
from .prompt import PROMPT

WEIGHTS_FILE = "task_vectors.safetensors"
RECORD_FILE = "entity_lens.json"
FORMAT = "entity-lens-task-vectors/1"
PACKAGED = Path(str(files("entity_lens"))) / "task_vectors"


class TaskVector(nn.Module):
    """v ∈ R^d_model, written at `>`; for the linear-map variant also an affine map A r + b (initialised to the
    identity) applied to the representation r before it is written at `_`."""

    def __init__(self, vector: torch.Tensor, linear: nn.Linear | None = None):
        super().__init__()
        self.vector = nn.Parameter(vector.detach().float().clone())
        self.linear = linear

    @classmethod
    def random(cls, d_model: int, generator: torch.Generator | None = None) -> TaskVector:
        """v ~ N(0, 1), the paper's initialisation."""
        return cls(torch.randn(d_model, generator=generator))

    def with_identity_map(self) -> TaskVector:
        """This v, frozen, with a trainable affine map initialised to the identity (the linear-map variant)."""
        d_model = self.vector.shape[0]
        linear = nn.Linear(d_model, d_model)
        with torch.no_grad():
            linear.weight.copy_(torch.eye(d_model))
            linear.bias.zero_()
        variant = TaskVector(self.vector.detach(), linear)
        variant.vector.requires_grad_(False)
        return variant

    def transform(self, representations: torch.Tensor) -> torch.Tensor:
        """What is written at `_`: the representations, through the affine map when there is one."""
        return self.linear(representations) if self.linear is not None else representations

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        tensors = {f"{prefix}.vector": self.vector.detach().contiguous()}
        if self.linear is not None:
            tensors[f"{prefix}.linear.weight"] = self.linear.weight.detach().contiguous()
            tensors[f"{prefix}.linear.bias"] = self.linear.bias.detach().contiguous()
        return tensors


@dataclass
class TaskVectorSet:
    """Task vectors for several layers of one model, for one mode, pooling and task, with their record."""

    vectors: dict[int, TaskVector]
    model: str  # what `models.load_causal_lm` loads: an offline model name, a folder or a Hub id
    d_model: int
    mode: str = "raw"
    pooling: str = "last"
    task: str = "mention"  # or a relation, e.g. "capital": what is decoded from the entity's representation
    prompt_context: bool = False  # whether the decoding prompt starts with the entity's text
    record: dict[str, Any] = field(default_factory=dict)  # training data, settings, budgets, per-layer metrics

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    @property
    def variant(self) -> str:
        return "linear" if any(v.linear is not None for v in self.vectors.values()) else "vector"

    def check_model(self, model: PreTrainedModel) -> None:
        """Raise `EntityLensError` unless these vectors fit `model` (same width, layers inside it)."""
        hidden = model.config.get_text_config().hidden_size
        if hidden != self.d_model:
            raise EntityLensError(
                f"these task vectors were trained on {self.model} (d_model {self.d_model}) and cannot be used with a "
                f"model of d_model {hidden}: load {self.model}, or train task vectors for your model"
            )
        check_layers(model, self.layers)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "d_model": self.d_model,
            "layers": self.layers,
            "hook": "blocks.{layer}.hook_resid_post",
            "mode": self.mode,
            "pooling": self.pooling,
            "task": self.task,
            "variant": self.variant,
            "prompt": f"<bos> {'<context> ' if self.prompt_context else ''}{PROMPT}",
            "prompt_context": self.prompt_context,
            "record": self.record,
        }

    def save(self, folder: str | Path) -> Path:
        """Write the two files, each atomically (written beside, then renamed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for layer, vector in sorted(self.vectors.items()):
            tensors.update(vector.tensors(f"layers.{layer}"))
        _atomic(folder / WEIGHTS_FILE, lambda path: save_file(tensors, str(path), metadata={"format": FORMAT}))
        text = json.dumps(self.metadata(), indent=2, ensure_ascii=False) + "\n"
        _atomic(folder / RECORD_FILE, lambda path: path.write_text(text, encoding="utf-8"))
        return folder

    @classmethod
    def load(cls, source: str | Path, revision: str | None = None) -> TaskVectorSet:
        """Load from a folder, or download from a Hub repository id (`revision`: a branch, tag or commit)."""
        folder = Path(source)
        if not folder.is_dir():
            folder = _download(str(source), revision)
        return cls._read(folder)

    @classmethod
    def _read(cls, folder: Path) -> TaskVectorSet:
        try:
            metadata = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EntityLensError(f"{folder} has no {RECORD_FILE}: it is not a task-vector folder") from None
        except json.JSONDecodeError as error:
            raise EntityLensError(
                f"{folder / RECORD_FILE} is not valid JSON ({error}): re-save the task vectors"
            ) from None
        if metadata.get("format") != FORMAT:
            raise EntityLensError(
                f"{folder / RECORD_FILE} has format {metadata.get('format')!r}, expected {FORMAT!r}: it was not "
                "written by entity_lens"
            )
        try:
            tensors = load_file(str(folder / WEIGHTS_FILE))
        except FileNotFoundError:
            raise EntityLensError(f"{folder} has no {WEIGHTS_FILE}: the task vectors themselves are missing") from None
        except SafetensorError as error:
            raise EntityLensError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file ({error})") from None
        d_model = int(metadata["d_model"])
        vectors = {}
        for layer in metadata["layers"]:
            vectors[int(layer)] = _vector_from(tensors, f"layers.{layer}", d_model, folder)
        extra = set(tensors) - {name for layer, vector in vectors.items() for name in vector.tensors(f"layers.{layer}")}
        if extra:
            raise EntityLensError(f"{folder / WEIGHTS_FILE} holds tensors its record does not list: {sorted(extra)}")
        return cls(
            vectors=vectors,
            model=metadata["model"],
            d_model=d_model,
            mode=metadata.get("mode", "raw"),
            pooling=metadata.get("pooling", "last"),
            task=metadata.get("task", "mention"),
            prompt_context=bool(metadata.get("prompt_context", False)),
            record=metadata.get("record") or {},
        )


def packaged_task_vectors(model: str = "gemma-3-270m", mode: str = "raw") -> Path:
    """The folder of the task vectors shipped with this library for `model` and `mode`."""
    folder = PACKAGED / model / mode
    if not (folder / RECORD_FILE).is_file():
        shipped = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in PACKAGED.glob(f"*/*/{RECORD_FILE}"))
        raise EntityLensError(
            f"no task vectors are packaged for {model} in mode {mode!r} (packaged: {', '.join(shipped) or 'none'}): "
            "train them with scripts/entity_lens_experiment.py, or pass a folder or Hub id"
        )
    return folder


def _vector_from(tensors: dict[str, torch.Tensor], prefix: str, d_model: int, folder: Path) -> TaskVector:
    vector = tensors.get(f"{prefix}.vector")
    if vector is None or tuple(vector.shape) != (d_model,):
        found = None if vector is None else tuple(vector.shape)
        raise EntityLensError(f"{folder / WEIGHTS_FILE}: {prefix}.vector should have shape ({d_model},), found {found}")
    weight, bias = tensors.get(f"{prefix}.linear.weight"), tensors.get(f"{prefix}.linear.bias")
    if weight is None and bias is None:
        return TaskVector(vector)
    if weight is None or bias is None or tuple(weight.shape) != (d_model, d_model) or tuple(bias.shape) != (d_model,):
        raise EntityLensError(
            f"{folder / WEIGHTS_FILE}: {prefix}.linear must have a ({d_model}, {d_model}) weight and a bias"
        )
    linear = nn.Linear(d_model, d_model)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return TaskVector(vector, linear)


def _atomic(path: Path, write) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    write(partial)
    os.replace(partial, path)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[WEIGHTS_FILE, RECORD_FILE]))
    except (HfHubHTTPError, LocalEntryNotFoundError, ValueError, OSError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise EntityLensError(
            f"{repo_id!r} is neither a task-vector folder nor a Hub repository that could be downloaded ({first_line})"
        ) from None
