"""The Entity Lens: for a text and an entity in it, the mention each layer's representation decodes to.

    from entity_lens import lens
    lens("Marie Curie was born in Warsaw.", "Marie Curie")         # packaged task vectors, gemma-3-270m
    # [LayerMention(layer=0, mention='...'), ..., LayerMention(layer=17, mention='...')]

`EntityLens` holds a model and one `TaskVectorSet` per mode; `EntityLens.from_pretrained()` loads the task vectors
packaged with this library (or a folder / Hub id) and the model they were trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .decoding import MAX_NEW_TOKENS, decode_mentions
from .errors import EntityLensError
from .models import DEFAULT_MODEL, check_causal_lm, load_causal_lm
from .representations import EntityMention, extract_representations
from .task_vectors import TaskVectorSet, packaged_task_vectors

LENS_MODES = ("raw", "context")


@dataclass(frozen=True)
class LayerMention:
    layer: int
    mention: str


class EntityLens:
    """A causal LM with task vectors per layer, for one or more modes (`raw`, `context`, ...)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task_vectors: Sequence[TaskVectorSet]
    ):
        check_causal_lm(model)
        self.model, self.tokenizer = model, tokenizer
        self.task_vectors: dict[str, TaskVectorSet] = {}
        for vectors in task_vectors:
            vectors.check_model(model)
            if vectors.task != "mention":
                raise EntityLensError(
                    f"these task vectors decode the relation {vectors.task!r}, not the entity's mention: use them with "
                    "decode_mentions, not as a lens"
                )
            self.task_vectors[vectors.mode] = vectors

    @classmethod
    def from_pretrained(
        cls,
        task_vectors: Sequence[str | Path] | None = None,
        model: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> EntityLens:
        """Task vectors from folders or Hub ids (default: those packaged for the default model, in every mode
        shipped), and the model they record (or `model`, which must have the same width)."""
        if task_vectors is None:
            sets = [TaskVectorSet.load(packaged_task_vectors(DEFAULT_MODEL, mode)) for mode in _packaged_modes()]
        else:
            sets = [TaskVectorSet.load(source) for source in task_vectors]
        names = {s.model for s in sets}
        if model is None and len(names) > 1:
            raise EntityLensError(f"these task vectors come from different models ({sorted(names)}): pass one model")
        loaded, tokenizer = load_causal_lm(model or names.pop(), cache_dir=cache_dir)
        return cls(loaded, tokenizer, sets)

    @property
    def modes(self) -> list[str]:
        return sorted(self.task_vectors)

    def vectors(self, mode: str) -> TaskVectorSet:
        if mode not in self.task_vectors:
            raise EntityLensError(
                f"no task vectors for mode {mode!r} are loaded (loaded: {', '.join(self.modes)}): pass task vectors "
                "trained in that mode"
            )
        return self.task_vectors[mode]

    @torch.no_grad()
    def lens_many(
        self,
        mentions: Sequence[EntityMention],
        mode: str = "raw",
        layers: Sequence[int] | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        batch_size: int = 64,
    ) -> list[list[LayerMention]]:
        """For each mention, the mention decoded at each layer (every layer with a task vector by default).

        All (mention, layer) pairs decode in shared batches, each row with its own layer's task vector."""
        vectors = self.vectors(mode)
        layers = list(vectors.layers if layers is None else layers)
        missing = [layer for layer in layers if layer not in vectors.vectors]
        if missing:
            raise EntityLensError(
                f"no task vector for layer(s) {missing} in mode {mode!r}: these task vectors cover layers "
                f"{vectors.layers}"
            )
        representations = extract_representations(
            self.model, self.tokenizer, mentions, layers, vectors.mode, vectors.pooling, batch_size
        )
        written, task = [], []
        for column, layer in enumerate(layers):  # rows: layer-major, then mention
            written.append(vectors.vectors[layer].transform(representations[:, column]))
            task.append(vectors.vectors[layer].vector.expand(len(mentions), -1))
        contexts = [m.text for m in mentions] * len(layers) if vectors.prompt_context else None
        decoded = decode_mentions(
            self.model, self.tokenizer, torch.cat(written), torch.cat(task), contexts, max_new_tokens, batch_size
        )
        return [
            [LayerMention(layer, decoded[column * len(mentions) + row].mention) for column, layer in enumerate(layers)]
            for row in range(len(mentions))
        ]

    def lens(
        self, text: str, entity: str, mode: str = "raw", layers: Sequence[int] | None = None, start: int | None = None
    ) -> list[LayerMention]:
        """The mention decoded at each layer from `entity` (read alone in `raw` mode, inside `text` in `context`
        mode; `start`: its character offset in `text`, by default its first occurrence)."""
        return self.lens_many([EntityMention(entity, text, start)], mode, layers)[0]


def _packaged_modes() -> list[str]:
    modes = []
    for mode in LENS_MODES:
        try:
            packaged_task_vectors(DEFAULT_MODEL, mode)
        except EntityLensError:
            continue
        modes.append(mode)
    if not modes:
        packaged_task_vectors(DEFAULT_MODEL, "raw")  # raises the error that lists what is packaged
    return modes


@cache
def default_lens() -> EntityLens:
    """The lens with the packaged task vectors of the default model, loaded once per process."""
    return EntityLens.from_pretrained()


def lens(text: str, entity: str, mode: str = "raw", layers: Sequence[int] | None = None) -> list[LayerMention]:
    """The packaged Entity Lens of the default model: the mention decoded at each layer (see `EntityLens.lens`)."""
    return default_lens().lens(text, entity, mode, layers)
