"""Margin-MSE (Hofstätter et al. 2020) on listwise rows."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import MarginMSELoss as STMarginMSELoss
from torch import Tensor

from .listwise import ListwiseObjective, Targets, listwise_inputs, rows_by_length


class MarginMSELoss(ListwiseObjective, STMarginMSELoss):
    r"""Margin-MSE: the student's score margins must match the teacher's (Hofstätter et al. 2020, arXiv 2010.02666).

    .. math::

        \mathcal{L} = \frac{1}{|M|}\sum_{(q,j)\in M} \Big(\big(s_{q,a} - s_{q,j}\big) - \big(t_{q,a} - t_{q,j}\big)\Big)^2

    For each list the anchor :math:`a` is the document the teacher scores highest, and :math:`M` holds every other
    document :math:`j` of the list; :math:`s` are raw student logits and :math:`t` teacher scores. On Hofstätter's
    (query, positive, negative) triples this is exactly the paper's loss (with two documents the squared margin error
    is the same whichever one is the anchor); with more documents it is sentence-transformers' multi-negative form.

    This subclass only turns listwise rows into sentence-transformers'
    :class:`~sentence_transformers.cross_encoder.losses.MarginMSELoss` inputs ``(query, anchor, negative_1, ...)``
    with the raw teacher scores as labels; the formula is theirs. Lists of different lengths are scored in groups of
    equal length and the group losses averaged with their number of margins, so the result is the mean over all
    margins of the batch.

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``scores``: [t1, ..., tN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+
    """

    accepted_targets = ("scores",)
    min_list_size = 2

    def forward(self, inputs: list, labels: Targets, prompt: str | None = None, task: str | None = None) -> Tensor:
        queries, documents = listwise_inputs(inputs, type(self).__name__)
        scores = self.relevance(labels)
        total, margins = 0.0, 0
        for length, rows in rows_by_length(documents).items():
            # anchor first (the teacher's best), then the other documents in list order
            orders = []
            for row in rows:
                best = int(torch.argmax(scores[row]))
                orders.append([best] + [i for i in range(length) if i != best])
            columns = [[queries[row] for row in rows]]
            columns += [
                [documents[row][order[c]] for row, order in zip(rows, orders, strict=True)] for c in range(length)
            ]
            targets = torch.stack([scores[row][order] for row, order in zip(rows, orders, strict=True)])
            count = len(rows) * (length - 1)
            total = total + super().forward(columns, targets, prompt=prompt, task=task) * count
            margins += count
        return total / margins
