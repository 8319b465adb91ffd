"""Listwise KL divergence between the teacher's and the student's score distributions, with a temperature."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import ListNetLoss
from torch import Tensor, nn

from .listwise import ListScores, ListwiseObjective, Targets, padded_rows


class Temperature(nn.Module):
    """Divides logits by a temperature."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: Tensor) -> Tensor:
        return logits / self.temperature


class KLDivergenceLoss(ListwiseObjective, ListNetLoss):
    r"""KL divergence from the teacher's to the student's softmax distribution over a list, with a temperature.

    .. math::

        p_{qi} = \frac{e^{t_{qi}/T}}{\sum_j e^{t_{qj}/T}},\quad
        p^s_{qi} = \frac{e^{s_{qi}/T}}{\sum_j e^{s_{qj}/T}},\qquad
        \mathcal{L} = \frac{T^2}{|Q|}\sum_q \sum_i p_{qi} \log\frac{p_{qi}}{p^s_{qi}}

    with teacher scores :math:`t`, raw student logits :math:`s` and temperature :math:`T`; the :math:`T^2` factor keeps
    gradient magnitudes comparable across temperatures (Hinton et al. 2015). The "KL" objective of the distillation
    study (arXiv 2603.03010). PyLate's ``Distillation`` loss is a related KL divergence, between normalised score
    lists of a ColBERT student and without a temperature; it is not this loss.

    It is sentence-transformers' :class:`~sentence_transformers.cross_encoder.losses.ListNetLoss` (the cross-entropy
    :math:`-\sum_i p_{qi}\log p^s_{qi}` over the padded lists, its ``cross_entropy_loss``) on logits and teacher
    scores divided by :math:`T`, minus the teacher's entropy, which turns the cross-entropy into the KL divergence
    (zero when the distributions match) without changing the gradients.

    Args:
        model: the CrossEncoder to train (``num_labels=1``).
        temperature: :math:`T`, applied to both teacher and student.
        mini_batch_size: passed to ``ListNetLoss``.

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``scores``: [t1, ..., tN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+
    """

    accepted_targets = ("scores",)
    min_list_size = 2

    def __init__(self, model, temperature: float = 1.0, mini_batch_size: int | None = None) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().__init__(model, activation_fn=Temperature(temperature), mini_batch_size=mini_batch_size)
        self.temperature = temperature

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> Tensor:
        teacher = [target / self.temperature for target in self.relevance(labels)]
        student, _ = padded_rows([self.activation_fn(row) for row in scores.rows], -1e16)
        distribution, _ = padded_rows(teacher, float("-inf"))
        cross_entropy = self.cross_entropy_loss(student, distribution.softmax(dim=1))
        entropy = torch.stack([-(p * p.log()).nan_to_num().sum() for p in (t.softmax(-1) for t in teacher)]).mean()
        return self.temperature**2 * (cross_entropy - entropy.to(cross_entropy.device))

    def get_config_dict(self) -> dict[str, float | int | None]:
        return {"temperature": self.temperature, "mini_batch_size": self.mini_batch_size}

    @property
    def citation(self) -> str:
        return """
@misc{hinton2015distilling,
    title={Distilling the Knowledge in a Neural Network},
    author={Geoffrey Hinton and Oriol Vinyals and Jeff Dean},
    year={2015},
    eprint={1503.02531},
    archivePrefix={arXiv}
}
"""
