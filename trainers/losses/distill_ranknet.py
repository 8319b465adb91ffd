"""DistillRankNet (Rank-DistiLLM): RankNet on the pairs the teacher orders."""

from __future__ import annotations

from typing import Literal

from sentence_transformers.cross_encoder.losses import RankNetLoss
from torch import Tensor, nn

from .listwise import ListwiseObjective, Targets


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
    no weighting) fed with negated teacher ranks. One difference in the defaults: theirs divides by :math:`\ln 2`
    (``reduction_log="binary"``); the paper's loss uses the natural log, which is this class's default. Both
    average over all ordered pairs of the batch.

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

    def forward(self, inputs: list, labels: Targets, prompt: str | None = None, task: str | None = None) -> Tensor:
        return super().forward(inputs, self.relevance(labels), prompt=prompt, task=task)

    @property
    def citation(self) -> str:
        return RANK_DISTILLM


RANK_DISTILLM = """
@inproceedings{schlatt2025rankdistillm,
    title={Rank-DistiLLM: Closing the Effectiveness Gap Between Cross-Encoders and LLMs for Passage Re-ranking},
    author={Schlatt, Ferdinand and Fr{\\"o}be, Maik and Scells, Harrisen and Zhuang, Shengyao and Koopman, Bevan and Zuccon, Guido and Stein, Benno and Potthast, Martin and Hagen, Matthias},
    booktitle={Advances in Information Retrieval (ECIR 2025)},
    year={2025},
    doi={10.1007/978-3-031-88714-7_31}
}
"""
