"""ADR-MSE (Rank-DistiLLM): approximate discounted rank MSE to the teacher's ranks."""

from __future__ import annotations

from sentence_transformers.cross_encoder.losses import ADRMSELoss as STADRMSELoss
from torch import Tensor

from .listwise import ListwiseObjective, Targets


class ADRMSELoss(ListwiseObjective, STADRMSELoss):
    r"""Approximate Discounted Rank MSE (Rank-DistiLLM, Schlatt et al., ECIR 2025, arXiv 2405.07920).

    .. math::

        \hat r_{qi} = 1 + \sum_{j \ne i} \sigma\Big(\frac{s_{qj} - s_{qi}}{T}\Big), \qquad
        \mathcal{L} = \frac{1}{N}\sum_{(q,i)} \frac{(\hat r_{qi} - r_{qi})^2}{\log_2(r_{qi} + 1)}

    :math:`\hat r` is the student's differentiable approximate rank (ApproxRank, :math:`T = 1/\alpha = 1`), :math:`r`
    the teacher's rank (1 = best) and the mean runs over all documents of the batch.

    It is sentence-transformers' :class:`~sentence_transformers.cross_encoder.losses.ADRMSELoss` fed with negated
    teacher ranks, whose formula matches the paper's. One difference: theirs derives the target ranks from the
    labels and gives tied labels their average rank; with the teacher's integer ranks (no ties) the targets are
    exactly the paper's :math:`r`. With only teacher scores, ranks follow the scores (ties averaged).

    Inputs:
        +---------------------------------+-------------------------------------------+-------------------------------+
        | Inputs                          | Targets                                   | Number of Model Output Labels |
        +=================================+===========================================+===============================+
        | (query, [doc1, ..., docN])      | ``ranks``: [r1, ..., rN] (or ``scores``)  | 1                             |
        +---------------------------------+-------------------------------------------+-------------------------------+
    """

    accepted_targets = ("ranks", "scores")
    min_list_size = 2

    def forward(self, inputs: list, labels: Targets, prompt: str | None = None, task: str | None = None) -> Tensor:
        return super().forward(inputs, self.relevance(labels), prompt=prompt, task=task)
