"""ADR-MSE (Rank-DistiLLM): approximate discounted rank MSE to the teacher's ranks."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import ADRMSELoss as STADRMSELoss
from torch import Tensor

from .listwise import ListScores, ListwiseObjective, Targets, padded_rows


class ADRMSELoss(ListwiseObjective, STADRMSELoss):
    r"""Approximate Discounted Rank MSE (Rank-DistiLLM, Schlatt et al., ECIR 2025, arXiv 2405.07920).

    .. math::

        \hat r_{qi} = 1 + \sum_{j \ne i} \sigma\Big(\frac{s_{qj} - s_{qi}}{T}\Big), \qquad
        \mathcal{L} = \frac{1}{N}\sum_{(q,i)} \frac{(\hat r_{qi} - r_{qi})^2}{\log_2(r_{qi} + 1)}

    :math:`\hat r` is the student's differentiable approximate rank (ApproxRank, :math:`T = 1/\alpha = 1`), :math:`r`
    the teacher's rank (1 = best) and the mean runs over all documents of the batch.

    It is sentence-transformers' :class:`~sentence_transformers.cross_encoder.losses.ADRMSELoss` (its
    ``approximate_ranks`` and ``activation_fn``) fed with negated teacher ranks, whose formula matches the paper's.
    One difference: theirs derives the target ranks from the labels and gives tied labels their average rank; with
    the teacher's integer ranks (no ties) the targets are exactly the paper's :math:`r`. With only teacher scores,
    ranks follow the scores (ties averaged).

    Inputs:
        +---------------------------------+-------------------------------------------+-------------------------------+
        | Inputs                          | Targets                                   | Number of Model Output Labels |
        +=================================+===========================================+===============================+
        | (query, [doc1, ..., docN])      | ``ranks``: [r1, ..., rN] (or ``scores``)  | 1                             |
        +---------------------------------+-------------------------------------------+-------------------------------+
    """

    accepted_targets = ("ranks", "scores")
    min_list_size = 2

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        student, mask = padded_rows([self.activation_fn(row) for row in scores.rows], -1e16)
        relevance, _ = padded_rows(self.relevance(labels), 0.0)
        # Target ranks from the relevance, tied documents sharing their average rank (as sentence-transformers does).
        valid = mask.unsqueeze(1)
        greater = ((relevance.unsqueeze(1) > relevance.unsqueeze(2)) & valid).sum(dim=-1).float()
        equal = ((relevance.unsqueeze(1) == relevance.unsqueeze(2)) & valid).sum(dim=-1).float()
        target_ranks = greater + (equal + 1.0) / 2.0
        squared_error = (target_ranks - self.approximate_ranks(student, mask)) ** 2
        loss = squared_error / torch.log2(target_ranks + 1.0) * mask.float()
        return loss.sum() / mask.sum()
