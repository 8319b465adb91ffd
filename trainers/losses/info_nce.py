"""InfoNCE / localized contrastive estimation: one positive against k negatives of the same list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
from torch import Tensor, nn

from .listwise import ListScores, ListwiseObjective, Targets, is_finite, rows_by_length


class InfoNCELoss(ListwiseObjective, MultipleNegativesRankingLoss):
    r"""InfoNCE over one positive and the k negatives of its list (localized contrastive estimation).

    .. math::

        \mathcal{L} = -\frac{1}{|Q|}\sum_{q} \log \frac{\exp(s_{q,p^+})}
        {\exp(s_{q,p^+}) + \sum_{j=1}^{k}\exp(s_{q,n_j}) \;[+ \sum_{d \in B_{\neg q}} \exp(s_{q,d})]}

    with raw logits :math:`s` (no activation, no scale by default). The positive :math:`p^+` is the first document
    with a positive label; the negatives :math:`n_j` are the list's documents labelled 0 (other positives are left
    out, they are not negatives). With ``positive_from="teacher"`` the positive is the teacher's best document (top
    score, or rank 1) and every other document is a negative, for lists without human labels. With
    ``in_batch_negatives=True`` every document of the other lists of the batch, :math:`B_{\neg q}`, is a negative too.

    This is the localized contrastive estimation of Gao et al. (ECIR 2021) used as stage 1 of Rank-DistiLLM
    (8 passages per query, one relevant) and the "InfoNCE" objective of the distillation study (arXiv 2603.03010,
    ``ListwiseSoftmaxCrossEntropy`` in xpmir). It is sentence-transformers'
    :class:`~sentence_transformers.cross_encoder.losses.MultipleNegativesRankingLoss` (its ``activation_fn``,
    ``scale`` and cross-entropy) with different defaults: theirs applies a Sigmoid and a scale of 10 to the logits
    and samples 4 in-batch negatives; the papers' loss is the plain softmax over raw logits, which is what
    ``activation_fn=None, scale=1.0`` gives.

    Args:
        model: the CrossEncoder to train (``num_labels=1``).
        positive_from: ``"labels"`` (qrels) or ``"teacher"`` (the teacher's best document).
        in_batch_negatives: also use the other lists' documents as negatives.
        scale: multiplies the logits (an inverse temperature).
        activation_fn: applied to the logits first (default Identity: raw logits).

    Inputs:
        +---------------------------------+----------------------------------------------+------------------------+
        | Inputs                          | Targets                                      | Model Output Labels    |
        +=================================+==============================================+========================+
        | (query, [doc1, ..., docN])      | ``labels`` (or ``scores``/``ranks`` with     | 1                      |
        |                                 | ``positive_from="teacher"``)                 |                        |
        +---------------------------------+----------------------------------------------+------------------------+
    """

    min_list_size = 2

    def __init__(
        self,
        model,
        positive_from: str = "labels",
        in_batch_negatives: bool = False,
        scale: float = 1.0,
        activation_fn: nn.Module | None = None,
    ) -> None:
        super().__init__(model, num_negatives=None, scale=scale, activation_fn=activation_fn or nn.Identity())
        if positive_from not in ("labels", "teacher"):
            raise ValueError(f"positive_from must be 'labels' or 'teacher', got {positive_from!r}.")
        self.positive_from = positive_from
        self.in_batch_negatives = in_batch_negatives
        self.accepted_targets = ("labels",) if positive_from == "labels" else ("ranks", "scores")

    @property
    def in_batch_pairs(self) -> bool:
        return self.in_batch_negatives

    def row_problem(self, num_documents: int, targets: Mapping[str, Sequence[float]]) -> str | None:
        problem = super().row_problem(num_documents, targets)
        if problem or self.positive_from == "teacher":
            return problem
        labels = targets["labels"]
        if not any(label > 0 for label in labels) or not any(label <= 0 for label in labels):
            return f"labels {list(labels)}: InfoNCELoss needs one positive (label > 0) and at least one negative"
        return None

    def split_list(self, relevance: Tensor) -> tuple[int, list[int]]:
        """Index of the positive and indices of the negatives of one list."""
        if self.positive_from == "teacher":
            positive = int(torch.argmax(relevance))
            return positive, [i for i in range(len(relevance)) if i != positive]
        positives = torch.nonzero(relevance > 0).flatten().tolist()
        negatives = torch.nonzero(relevance <= 0).flatten().tolist()
        if not positives or not negatives or not is_finite(relevance.tolist()):
            raise ValueError(
                f"InfoNCELoss needs one positive (label > 0) and at least one negative per list, got labels "
                f"{relevance.tolist()}."
            )
        return positives[0], negatives

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        candidates = []  # per query: the positive's logit first, then its negatives'
        start = 0
        for row, relevance in zip(scores.rows, self.relevance(labels), strict=True):
            positive, negatives = self.split_list(relevance)
            logits = [row[positive : positive + 1], row[negatives]]
            if self.in_batch_negatives:
                others = torch.ones(scores.all_pairs.shape[1], dtype=torch.bool, device=row.device)
                others[start : start + len(row)] = False
                logits.append(scores.all_pairs[len(candidates), others])
            candidates.append(torch.cat(logits))
            start += len(row)
        # sentence-transformers' cross-entropy with the positive at index 0, over queries with as many candidates.
        total = 0.0
        for _, group in rows_by_length(candidates).items():
            logits = torch.stack([candidates[row] for row in group])
            if self.activation_fn:
                logits = self.activation_fn(logits)
            if self.scale:
                logits = logits * self.scale
            targets = torch.zeros(len(group), dtype=torch.long, device=logits.device)
            total = total + self.cross_entropy_loss(logits, targets) * len(group)
        return total / len(candidates)

    def get_config_dict(self) -> dict[str, float | str | bool]:
        config = super().get_config_dict()
        del config["num_negatives"]
        return {**config, "positive_from": self.positive_from, "in_batch_negatives": self.in_batch_negatives}

    @property
    def citation(self) -> str:
        return """
@inproceedings{gao2021rethink,
    title={Rethink Training of BERT Rerankers in Multi-stage Retrieval Pipeline},
    author={Gao, Luyu and Dai, Zhuyun and Callan, Jamie},
    booktitle={Advances in Information Retrieval (ECIR 2021)},
    pages={280--286},
    year={2021}
}
"""
