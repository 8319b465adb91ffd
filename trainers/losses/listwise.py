"""What every objective shares: listwise rows in, targets out, and the row checks the trainer runs before training.

A training row is ``{"query": str, "documents": list[str], "scores": list[float], ["ranks": list[int]],
["labels": list[int]]}`` (docs/design.md). Losses receive a batch of rows as ``inputs = [queries, documents]`` and
``labels`` either as a dict of target columns (``DistillationTrainer``'s collator) or, in a plain
``CrossEncoderTrainer``, as the one label column sentence-transformers picked (a list of per-row tensors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from sentence_transformers.util import batch_to_device
from torch import Tensor

TARGET_COLUMNS = ("scores", "ranks", "labels")

Targets = Mapping[str, Sequence[Tensor]] | Sequence[Tensor] | Tensor


class ListwiseObjective:
    """Mixin declaring what an objective needs from a listwise row, so bad rows fail before training starts.

    ``accepted_targets`` lists the target columns the objective can train on, in order of preference; ``ranks`` are
    turned into "higher is better" relevance by negation. ``min_list_size`` is the fewest documents a list needs.
    """

    accepted_targets: tuple[str, ...] = ("scores",)
    min_list_size: int = 1

    def row_problem(self, num_documents: int, targets: Mapping[str, Sequence[float]]) -> str | None:
        """Why this objective cannot train on a row, or None. ``targets`` holds the row's target columns."""
        name = type(self).__name__
        if num_documents < self.min_list_size:
            return f"{num_documents} document(s), but {name} needs lists of at least {self.min_list_size}"
        if not any(targets.get(kind) is not None for kind in self.accepted_targets):
            return f"no {' or '.join(repr(k) for k in self.accepted_targets)} column, which {name} trains on"
        return None

    def relevance(self, labels: Targets) -> list[Tensor]:
        """Per-row targets where higher is better, from the first accepted target column in the batch.

        They are put on the model's device: targets that reach the loss as Python lists (a collator called outside
        the Trainer's loop, which moves only tensors) would otherwise stay on the CPU while the logits are on a GPU.
        """
        return target_lists(labels, self.accepted_targets, type(self).__name__, device=self.model.device)


def target_lists(
    labels: Targets, accepted: Sequence[str], loss_name: str, device: torch.device | str | None = None
) -> list[Tensor]:
    """Pick the first of ``accepted`` present in a batch's targets: float tensors on ``device``, higher is better.

    A plain list or tensor (sentence-transformers' single label column) is taken as it is.
    """
    if labels is None:
        raise ValueError(f"{loss_name} needs targets ({', '.join(accepted)}) but the batch has none.")
    if isinstance(labels, Mapping):
        for kind in accepted:
            if labels.get(kind) is not None:
                values = [torch.as_tensor(row, dtype=torch.float32, device=device) for row in labels[kind]]
                return [-row for row in values] if kind == "ranks" else values
        raise ValueError(
            f"{loss_name} trains on {' or '.join(repr(k) for k in accepted)}, but the batch only has the target "
            f"columns {sorted(k for k, v in labels.items() if v is not None)}. Add that column to the dataset or pick "
            "another objective."
        )
    return [torch.as_tensor(row, dtype=torch.float32, device=device) for row in labels]


def listwise_inputs(inputs: Sequence, loss_name: str) -> tuple[list[str], list[list[str]]]:
    """Check and unpack ``[queries, documents]``."""
    if len(inputs) != 2 or not all(isinstance(docs, (list, tuple)) for docs in inputs[1]):
        raise ValueError(
            f"{loss_name} expects two input columns, the queries and their lists of documents "
            f"(query: str, documents: list[str]), but got {len(inputs)} column(s)."
        )
    return list(inputs[0]), [list(docs) for docs in inputs[1]]


def rows_by_length(documents: Sequence[Sequence[str]]) -> dict[int, list[int]]:
    """Row indices grouped by list length, for objectives that need rectangular batches."""
    groups: dict[int, list[int]] = {}
    for row, docs in enumerate(documents):
        groups.setdefault(len(docs), []).append(row)
    return groups


def pair_logits(model, queries: Sequence[str], documents: Sequence[Sequence[str]], prompt=None, task=None) -> Tensor:
    """Raw logits of every (query, document) pair, flattened row by row, in one forward pass."""
    pairs = [(query, doc) for query, docs in zip(queries, documents, strict=True) for doc in docs]
    features = batch_to_device(model.preprocess(pairs, prompt=prompt, task=task), model.device)
    return model(features)["scores"].view(-1).float()


def split_rows(flat: Tensor, documents: Sequence[Sequence[str]]) -> list[Tensor]:
    """Undo the flattening of ``pair_logits``: one tensor per row."""
    return list(torch.split(flat, [len(docs) for docs in documents]))


def is_finite(values: Sequence[float]) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)
