"""Margin-MSE (Hofstätter et al. 2020) on listwise rows."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import MarginMSELoss as STMarginMSELoss
from torch import Tensor

from .listwise import ListScores, ListwiseObjective, Targets


class MarginMSELoss(ListwiseObjective, STMarginMSELoss):
    r"""Margin-MSE: the student's score margins must match the teacher's (Hofstätter et al. 2020, arXiv 2010.02666).

    .. math::

        \mathcal{L} = \frac{1}{|M|}\sum_{(q,j)\in M} \Big(\big(s_{q,a} - s_{q,j}\big) - \big(t_{q,a} - t_{q,j}\big)\Big)^2

    For each list the anchor :math:`a` is the document the teacher scores highest, and :math:`M` holds every other
    document :math:`j` of the list; :math:`s` are raw student logits and :math:`t` teacher scores. On Hofstätter's
    (query, positive, negative) triples this is exactly the paper's loss (with two documents the squared margin error
    is the same whichever one is the anchor); with more documents it is sentence-transformers' multi-negative form
    (:class:`~sentence_transformers.cross_encoder.losses.MarginMSELoss` with ``(query, anchor, negative_1, ...)``
    columns and the teacher's scores as labels), whose ``loss_fct`` and ``activation_fn`` it uses. The mean runs over
    all margins of the batch, lists of any length.

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``scores``: [t1, ..., tN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+
    """

    accepted_targets = ("scores",)
    min_list_size = 2

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        student_margins, teacher_margins = [], []
        for logits, teacher in zip(scores.rows, self.relevance(labels), strict=True):
            logits = self.activation_fn(logits)
            anchor = int(torch.argmax(teacher))
            others = [i for i in range(len(teacher)) if i != anchor]
            student_margins.append(logits[anchor] - logits[others])
            teacher_margins.append(teacher[anchor] - teacher[others])
        return self.loss_fct(torch.cat(student_margins), torch.cat(teacher_margins).detach())
