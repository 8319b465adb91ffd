"""What every objective shares: listwise rows in, scores and targets to a loss, and the row checks run before training.

A training row is ``{"query": str, "documents": list[str], "scores": list[float], ["ranks": list[int]],
["labels": list[int]]}`` (docs/design.md). An objective computes its loss from the student's scores of a batch of
rows (:class:`ListScores`) and the rows' targets: ``DistillationTrainer`` scores each batch once (MICE-aware) and hands
the scores to every objective (:meth:`ListwiseObjective.loss_from_scores`). Called as a sentence-transformers loss,
``loss([queries, documents], labels)``, an objective scores the joint pairs with its model first, as
sentence-transformers' own losses do. ``labels`` is either a dict of target columns (``DistillationTrainer``'s
collator) or, in a plain ``CrossEncoderTrainer``, the one label column sentence-transformers picked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from sentence_transformers.util import batch_to_device
from torch import Tensor

TARGET_COLUMNS = ("scores", "ranks", "labels")

Targets = Mapping[str, Sequence[Tensor]] | Sequence[Tensor] | Tensor


@dataclass
class ListScores:
    """The student's raw logits for a batch of lists.

    ``rows[i]`` scores query ``i`` against the documents of its own list. ``all_pairs`` (only when an objective
    takes in-batch negatives) scores every query against every document of the batch, shape ``(queries,
    documents)``, documents in list order; ``rows`` are then slices of it.
    """

    rows: list[Tensor]
    all_pairs: Tensor | None = None

    @classmethod
    def from_flat(cls, flat: Tensor, documents: Sequence[Sequence[str]], all_pairs: bool = False) -> ListScores:
        """Split logits scored list by list (or, with ``all_pairs``, query by query over all documents)."""
        sizes = [len(docs) for docs in documents]
        if not all_pairs:
            return cls(list(torch.split(flat, sizes)))
        matrix = flat.view(len(documents), sum(sizes))
        starts = [0, *itertools.accumulate(sizes)][:-1]
        return cls(
            [matrix[row, start : start + size] for row, (start, size) in enumerate(zip(starts, sizes, strict=True))],
            matrix,
        )


class ListwiseObjective:
    """Mixin of every objective: what it needs from a row, and its loss from scores.

    ``accepted_targets`` lists the target columns the objective can train on, in order of preference; ``ranks`` are
    turned into "higher is better" relevance by negation. ``min_list_size`` is the fewest documents a list needs.
    ``in_batch_pairs`` asks the scorer for every query against every document of the batch (in-batch negatives).
    Subclasses implement :meth:`loss_from_scores`.
    """

    accepted_targets: tuple[str, ...] = ("scores",)
    min_list_size: int = 1
    in_batch_pairs: bool = False

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

    def forward(self, inputs: list, labels: Targets, prompt: str | None = None, task: str | None = None):
        """sentence-transformers' loss interface: score ``[queries, documents]`` with the model, then the loss."""
        queries, documents = listwise_inputs(inputs, type(self).__name__)
        scores = joint_pair_scores(self.model, queries, documents, self.in_batch_pairs, prompt, task)
        return self.loss_from_scores(scores, labels)

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        """The loss of a batch whose lists the student scored ``scores``, with the rows' targets ``labels``."""
        raise NotImplementedError


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


def rows_by_length(documents: Sequence[Sequence]) -> dict[int, list[int]]:
    """Row indices grouped by list length, for work that needs rectangular batches."""
    groups: dict[int, list[int]] = {}
    for row, docs in enumerate(documents):
        groups.setdefault(len(docs), []).append(row)
    return groups


def joint_pair_scores(
    model, queries: Sequence[str], documents: Sequence[Sequence[str]], all_pairs: bool = False, prompt=None, task=None
) -> ListScores:
    """Score lists as sentence-transformers' losses do: the model's own ``preprocess`` of the joint pairs, one
    forward pass. With ``all_pairs``, every query against every document of the batch."""
    lists = [[doc for docs in documents for doc in docs]] * len(queries) if all_pairs else documents
    pairs = [(query, doc) for query, docs in zip(queries, lists, strict=True) for doc in docs]
    features = batch_to_device(model.preprocess(pairs, prompt=prompt, task=task), model.device)
    return ListScores.from_flat(model(features)["scores"].view(-1).float(), documents, all_pairs)


def padded_rows(rows: Sequence[Tensor], fill: float) -> tuple[Tensor, Tensor]:
    """Rows of different lengths as one matrix padded with ``fill``, and the boolean mask of real entries."""
    width = max(len(row) for row in rows)
    matrix = rows[0].new_full((len(rows), width), fill)
    mask = torch.zeros((len(rows), width), dtype=torch.bool, device=rows[0].device)
    for index, row in enumerate(rows):
        matrix[index, : len(row)] = row
        mask[index, : len(row)] = True
    return matrix, mask


def is_finite(values: Sequence[float]) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)
