"""A weighted sum of objectives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from .listwise import ListScores, ListwiseObjective, Targets


class CombinedLoss(ListwiseObjective, nn.Module):
    r"""Weighted sum of objectives: :math:`\mathcal{L} = \sum_k w_k \mathcal{L}_k`.

    The loss is one entry per objective (already weighted), as sentence-transformers' trainers expect from a
    multi-component loss: they sum the entries and log each one. Every objective must take the same listwise rows;
    a row must satisfy all of them. The lists are scored once and the scores shared by the objectives.

    Args:
        model: the CrossEncoder the objectives train.
        objectives: ``(objective, weight)`` pairs.

    Example:
        ::

            loss = CombinedLoss(model, [(MarginMSELoss(model), 1.0), (InfoNCELoss(model), 0.5)])
    """

    def __init__(self, model, objectives: Sequence[tuple[nn.Module, float]]) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("CombinedLoss needs at least one (objective, weight) pair.")
        not_listwise = [type(o).__name__ for o, _ in objectives if not isinstance(o, ListwiseObjective)]
        if not_listwise:
            raise ValueError(f"CombinedLoss combines objectives of trainers.losses, not {not_listwise}.")
        self.model = model
        self.objectives = nn.ModuleList([objective for objective, _ in objectives])
        self.weights = [float(weight) for _, weight in objectives]
        names = [type(objective).__name__ for objective in self.objectives]
        self.names = [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]
        self.min_list_size = max(objective.min_list_size for objective in self.objectives)

    @property
    def in_batch_pairs(self) -> bool:
        return any(objective.in_batch_pairs for objective in self.objectives)

    def row_problem(self, num_documents: int, targets: Mapping[str, Sequence[float]]) -> str | None:
        for objective in self.objectives:
            problem = objective.row_problem(num_documents, targets)
            if problem:
                return problem
        return None

    def loss_from_scores(self, scores: ListScores, labels: Targets) -> dict[str, Tensor]:
        return {
            name: weight * objective.loss_from_scores(scores, labels)
            for name, weight, objective in zip(self.names, self.weights, self.objectives, strict=True)
        }

    def get_config_dict(self) -> dict[str, list]:
        return {
            "objectives": [
                {"name": type(objective).__name__, "weight": weight, "config": objective_config(objective)}
                for objective, weight in zip(self.objectives, self.weights, strict=True)
            ]
        }


def objective_config(objective: nn.Module) -> dict:
    """An objective's ``get_config_dict()``, or an empty dict for losses without one."""
    get_config = getattr(objective, "get_config_dict", None)
    return get_config() if get_config else {}
