"""Training objectives for cross-encoders and MICE, on listwise rows (one query, n documents, teacher targets).

Every class follows sentence-transformers' loss conventions (``__init__(model, ...)``, ``forward(inputs, labels)``,
``get_config_dict``, ``citation``), so it also trains in ``CrossEncoderTrainer``, and computes its loss from scores
(``loss_from_scores``), so that ``DistillationTrainer`` scores a batch once for all objectives. Where
sentence-transformers ships the objective, the class subclasses theirs and computes with its parts.
"""

from .adr_mse import ADRMSELoss
from .combined import CombinedLoss, objective_config
from .distill_ranknet import DistillRankNetLoss
from .hinge import HingeLoss
from .info_nce import InfoNCELoss
from .kl_divergence import KLDivergenceLoss
from .listwise import TARGET_COLUMNS, ListScores, ListwiseObjective
from .margin_mse import MarginMSELoss
from .pointwise_bce import PointwiseBCELoss
from .pointwise_mse import PointwiseMSELoss

OBJECTIVES = {
    cls.__name__: cls
    for cls in (
        PointwiseBCELoss,
        PointwiseMSELoss,
        HingeLoss,
        MarginMSELoss,
        InfoNCELoss,
        DistillRankNetLoss,
        ADRMSELoss,
        KLDivergenceLoss,
    )
}

__all__ = [
    "ADRMSELoss",
    "CombinedLoss",
    "DistillRankNetLoss",
    "HingeLoss",
    "InfoNCELoss",
    "KLDivergenceLoss",
    "ListScores",
    "ListwiseObjective",
    "MarginMSELoss",
    "OBJECTIVES",
    "PointwiseBCELoss",
    "PointwiseMSELoss",
    "TARGET_COLUMNS",
    "objective_config",
]
