"""Pointwise mean squared error to the teacher's scores."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import MarginMSELoss, MSELoss
from torch import Tensor

from .listwise import ListScores, ListwiseObjective, Targets


class PointwiseMSELoss(ListwiseObjective, MSELoss):
    r"""Mean squared error between the student's logit and the teacher's score for every pair of a list.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{(q,d)} \big(s_{qd} - t_{qd}\big)^2

    with :math:`s` the student's raw logit and :math:`t` the teacher's score, averaged over all pairs of the batch
    (the pointwise distillation baseline of Hofstätter et al. 2020, arXiv 2010.02666). The student learns the
    teacher's scale, so teacher scores should be logits too (not probabilities) unless ``activation_fn`` maps the
    student to the same range.

    It is sentence-transformers' :class:`~sentence_transformers.cross_encoder.losses.MSELoss` (its ``loss_fct`` and
    ``activation_fn``) on the flattened pairs of the lists.

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``scores``: [t1, ..., tN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+
    """

    accepted_targets = ("scores",)

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        return self.loss_fct(self.activation_fn(torch.cat(scores.rows)), torch.cat(self.relevance(labels)).detach())

    @property
    def citation(self) -> str:
        # Hofstätter et al. introduced pointwise MSE distillation next to Margin-MSE: one entry, sentence-transformers'.
        return MarginMSELoss.citation.fget(self)
