"""Pairwise hinge loss on human relevance labels."""

from __future__ import annotations

import torch
from sentence_transformers.util import fullname
from torch import Tensor, nn

from .listwise import ListScores, ListwiseObjective, Targets


class HingeLoss(ListwiseObjective, nn.Module):
    r"""Pairwise hinge (max-margin) loss over the document pairs of a list that the labels order.

    .. math::

        \mathcal{L} = \frac{1}{|P|}\sum_{(q,i,j)\in P} \max\big(0,\; m - (s_{qi} - s_{qj})\big),
        \qquad P = \{(q,i,j) : y_{qi} > y_{qj}\}

    with :math:`s` the raw logits, :math:`y` the relevance labels and margin :math:`m` (1 by default): a more
    relevant document must outscore a less relevant one by at least the margin. The mean runs over all ordered pairs
    of the batch; lists whose labels are all equal contribute no pair. This is RankSVM's ranking hinge (Herbrich et
    al. 2000; Joachims 2002), the "Hinge" objective on (query, positive, negative) triples of the distillation study
    (arXiv 2603.03010); on a list with one positive and k negatives it averages the k triples.
    sentence-transformers ships no hinge loss for cross-encoders.

    Args:
        model: the CrossEncoder to train (``num_labels=1``).
        margin: the margin :math:`m`.
        activation_fn: applied to the logits first (Identity: raw logits).

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``labels``: [y1, ..., yN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+
    """

    accepted_targets = ("labels",)
    min_list_size = 2

    def __init__(self, model, margin: float = 1.0, activation_fn: nn.Module | None = None) -> None:
        super().__init__()
        if model.num_labels != 1:
            raise ValueError(f"HingeLoss needs a model with 1 output label, got {model.num_labels}.")
        self.model = model
        self.margin = margin
        self.activation_fn = activation_fn or nn.Identity()

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        losses = []
        for row_logits, row_labels in zip(scores.rows, self.relevance(labels), strict=True):
            row_logits = self.activation_fn(row_logits)
            ordered = row_labels[:, None] > row_labels[None, :]
            margins = row_logits[:, None] - row_logits[None, :]
            losses.append(torch.relu(self.margin - margins)[ordered])
        losses = torch.cat(losses)
        if losses.numel() == 0:
            # No pair is ordered by the labels: nothing to learn, but keep the graph for DDP.
            return torch.cat(scores.rows).sum() * 0.0
        return losses.mean()

    def get_config_dict(self) -> dict[str, float | str]:
        return {"margin": self.margin, "activation_fn": fullname(self.activation_fn)}

    @property
    def citation(self) -> str:
        return """
@inproceedings{herbrich2000large,
    title={Large Margin Rank Boundaries for Ordinal Regression},
    author={Herbrich, Ralf and Graepel, Thore and Obermayer, Klaus},
    booktitle={Advances in Large Margin Classifiers},
    pages={115--132},
    year={2000},
    publisher={MIT Press}
}
"""
