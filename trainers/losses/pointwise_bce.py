"""Pointwise binary cross-entropy on human relevance labels."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
from torch import Tensor

from .listwise import ListScores, ListwiseObjective, Targets


class PointwiseBCELoss(ListwiseObjective, BinaryCrossEntropyLoss):
    r"""Binary cross-entropy of every (query, document) pair of a list against its relevance label.

    .. math::

        \mathcal{L} = -\frac{1}{N}\sum_{(q,d)} \big[y_{qd}\log\sigma(s_{qd}) + (1-y_{qd})\log(1-\sigma(s_{qd}))\big]

    with :math:`s_{qd}` the raw logit and :math:`y_{qd} = 1` when the row's label is positive (graded qrels are
    binarised: label > 0), else 0. The mean runs over all pairs of the batch. This is monoBERT's objective
    (Nogueira & Cho 2019), the pointwise "BCE" baseline of the distillation study (arXiv 2603.03010).

    It is sentence-transformers' :class:`~sentence_transformers.cross_encoder.losses.BinaryCrossEntropyLoss` on the
    flattened pairs of the lists (its ``BCEWithLogitsLoss``, ``pos_weight`` and ``activation_fn``).

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``labels``: [y1, ..., yN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+

    Example:
        ::

            loss = PointwiseBCELoss(model)
            loss([["q"], [["relevant doc", "other doc"]]], {"labels": [torch.tensor([1, 0])]})
    """

    accepted_targets = ("labels",)

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        relevant = (torch.cat(self.relevance(labels)) > 0).float()
        return self.bce_with_logits_loss(self.activation_fn(torch.cat(scores.rows)), relevant)

    @property
    def citation(self) -> str:
        return """
@article{nogueira2019passage,
    title={Passage Re-ranking with BERT},
    author={Nogueira, Rodrigo and Cho, Kyunghyun},
    journal={arXiv preprint arXiv:1901.04085},
    year={2019}
}
"""
