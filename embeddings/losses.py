"""The training objective of the light dual encoder: sentence-transformers' own bi-encoder losses, on one forward pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss, MultipleNegativesRankingLoss
from sentence_transformers.util import pairwise_cos_sim
from torch import Tensor, nn


class ContrastiveDistillationLoss(nn.Module):
    """InfoNCE on the labelled positive plus KL distillation of a cross-encoder's scores, on shared embeddings.

    .. math::

        L = \\mathrm{MNRL}(q, d^+, d^-_{1..n}) + \\lambda\\, T^2\\, \\mathrm{KL}\\big(\\mathrm{softmax}(t / T_t)
            \\,\\|\\, \\mathrm{softmax}(\\cos(q, d) / T)\\big)

    The first term is sentence-transformers' :class:`MultipleNegativesRankingLoss` (van den Oord et al., 2018;
    cosine similarity times ``scale = 1 / T``; the other rows' documents are negatives too); the second its
    :class:`DistillKLDivLoss` (Lin et al., 2020) over the row's documents, the teacher's raw scores ``t`` softened by
    ``T_t``. The columns are embedded once and both losses read the embeddings (``compute_loss_from_embeddings``).

    +-----------------------------------------------+------------------------------------------------------------+
    | Inputs                                        | Labels                                                     |
    +===============================================+============================================================+
    | (query, positive, negative_1, ..., negative_n) | teacher scores [t(q, positive), t(q, negative_1), ...]     |
    +-----------------------------------------------+------------------------------------------------------------+

    Example:
        >>> loss = ContrastiveDistillationLoss(model, scale=20.0, distillation_weight=1.0)
        >>> trainer = SentenceTransformerTrainer(model=model, train_dataset=rows, loss=loss)
    """

    def __init__(
        self,
        model: SentenceTransformer,
        scale: float = 20.0,
        distillation_weight: float = 1.0,
        teacher_temperature: float = 1.0,
    ):
        super().__init__()
        if scale <= 0 or teacher_temperature <= 0 or distillation_weight < 0:
            raise ValueError("scale and teacher_temperature must be positive, distillation_weight not negative")
        self.model = model
        self.contrastive = MultipleNegativesRankingLoss(model, scale=scale)
        self.distillation = DistillKLDivLoss(
            model,
            similarity_fct=pairwise_cos_sim,
            student_temperature=1.0 / scale,
            teacher_temperature=teacher_temperature,
        )
        self.distillation_weight = distillation_weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        loss = self.contrastive.compute_loss_from_embeddings(embeddings, labels)
        if self.distillation_weight:
            loss = loss + self.distillation_weight * self.distillation.compute_loss_from_embeddings(embeddings, labels)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "contrastive": {"name": type(self.contrastive).__name__, **self.contrastive.get_config_dict()},
            "distillation": {"name": type(self.distillation).__name__, **self.distillation.get_config_dict()},
            "distillation_weight": self.distillation_weight,
        }

    @property
    def citation(self) -> str:
        return self.contrastive.citation + self.distillation.citation
