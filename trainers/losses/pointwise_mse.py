"""Pointwise mean squared error to the teacher's scores."""

from __future__ import annotations

import torch
from sentence_transformers.cross_encoder.losses import MSELoss
from torch import Tensor

from .listwise import ListwiseObjective, Targets, listwise_inputs


class PointwiseMSELoss(ListwiseObjective, MSELoss):
    r"""Mean squared error between the student's logit and the teacher's score for every pair of a list.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{(q,d)} \big(s_{qd} - t_{qd}\big)^2

    with :math:`s` the student's raw logit and :math:`t` the teacher's score, averaged over all pairs of the batch
    (the pointwise distillation baseline of Hofstätter et al. 2020, arXiv 2010.02666). The student learns the
    teacher's scale, so teacher scores should be logits too (not probabilities) unless ``activation_fn`` maps the
    student to the same range.

    It flattens the listwise rows into pairs and calls sentence-transformers'
    :class:`~sentence_transformers.cross_encoder.losses.MSELoss`, so the formula is theirs.

    Inputs:
        +---------------------------------+-----------------------------+-------------------------------+
        | Inputs                          | Targets                     | Number of Model Output Labels |
        +=================================+=============================+===============================+
        | (query, [doc1, ..., docN])      | ``scores``: [t1, ..., tN]   | 1                             |
        +---------------------------------+-----------------------------+-------------------------------+
    """

    accepted_targets = ("scores",)

    def forward(self, inputs: list, labels: Targets, prompt: str | None = None, task: str | None = None) -> Tensor:
        queries, documents = listwise_inputs(inputs, type(self).__name__)
        scores = torch.cat(self.relevance(labels))
        repeated = [query for query, docs in zip(queries, documents, strict=True) for _ in docs]
        flat = [doc for docs in documents for doc in docs]
        return super().forward([repeated, flat], scores, prompt=prompt, task=task)

    @property
    def citation(self) -> str:
        return HOFSTAETTER_2020


HOFSTAETTER_2020 = """
@misc{hofstaetter2021improving,
    title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
    author={Sebastian Hofst{\\"a}tter and Sophia Althammer and Michael Schr{\\"o}der and Mete Sertkan and Allan Hanbury},
    year={2021},
    eprint={2010.02666},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""
