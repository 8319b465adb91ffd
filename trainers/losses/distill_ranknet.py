"""DistillRankNet (Rank-DistiLLM): RankNet on the pairs the teacher orders."""

from __future__ import annotations

import math
from typing import Literal

import torch
from sentence_transformers.cross_encoder.losses import ADRMSELoss, RankNetLoss
from torch import Tensor, nn

from .listwise import ListScores, ListwiseObjective, Targets, padded_rows


class DistillRankNetLoss(ListwiseObjective, RankNetLoss):
    r"""RankNet distillation of a teacher's ranking (Rank-DistiLLM, Schlatt et al., ECIR 2025, arXiv 2405.07920).

    .. math::

        \mathcal{L} = \frac{1}{|P|}\sum_{(q,i,j)\in P} \log\big(1 + \exp(-\sigma (s_{qi} - s_{qj}))\big),
        \qquad P = \{(q,i,j) : r_{qi} < r_{qj}\}

    over every pair of a list that the teacher ranks :math:`i` above :math:`j` (its ranks :math:`r`, 1 = best; with
    only teacher scores, pairs with :math:`t_{qi} > t_{qj}`), :math:`s` the raw student logits and :math:`\sigma = 1`.
    This is BCE-with-logits on :math:`s_i - s_j`, the "DistillRankNet" objective of the distillation study
    (arXiv 2603.03010) trained on RankZephyr rankings.

    It is sentence-transformers' :class:`~sentence_transformers.cross_encoder.losses.RankNetLoss` (LambdaLoss with
    no weighting: with ``k``, only pairs with a document in the student's top ``k``) fed with negated teacher ranks.
    One difference in the defaults: theirs divides by :math:`\ln 2` (``reduction_log="binary"``); the paper's loss
    uses the natural log, which is this class's default. Both average over all ordered pairs of the batch.

    Inputs:
        +---------------------------------+-------------------------------------------+-------------------------------+
        | Inputs                          | Targets                                   | Number of Model Output Labels |
        +=================================+===========================================+===============================+
        | (query, [doc1, ..., docN])      | ``ranks``: [r1, ..., rN] (or ``scores``)  | 1                             |
        +---------------------------------+-------------------------------------------+-------------------------------+
    """

    accepted_targets = ("ranks", "scores")
    min_list_size = 2

    def __init__(
        self,
        model,
        sigma: float = 1.0,
        k: int | None = None,
        reduction_log: Literal["natural", "binary"] = "natural",
        activation_fn: nn.Module | None = None,
        mini_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            model,
            k=k,
            sigma=sigma,
            reduction_log=reduction_log,
            activation_fn=activation_fn or nn.Identity(),
            mini_batch_size=mini_batch_size,
        )

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        student, mask = padded_rows([self.activation_fn(row) for row in scores.rows], -1e16)
        relevance, _ = padded_rows(self.relevance(labels), float("-inf"))
        # Pairs in the order of the student's scores: the top-k cutoff reads the student's ranking.
        student, order = student.sort(descending=True, dim=-1)
        relevance = relevance.gather(1, order)
        differences = relevance[:, :, None] - relevance[:, None, :]
        ordered = torch.isfinite(differences) & (differences > 0)  # padding is -inf: never in a pair
        width = student.shape[1]
        top = torch.zeros((width, width), dtype=torch.bool, device=student.device)
        top[: self.k or width, :] = True
        top[:, : self.k or width] = True
        margins = (student[:, :, None] - student[:, None, :]).clamp(min=-1e8, max=1e8).nan_to_num(0.0)
        losses = -nn.functional.logsigmoid(self.sigma * margins)[ordered & top]
        if self.reduction_log == "binary":
            losses = losses / math.log(2)
        return losses.sum() / max(losses.numel(), 1)

    @property
    def citation(self) -> str:
        # The paper of ADR-MSE too: one entry for both, sentence-transformers' own.
        return ADRMSELoss.citation.fget(self)
