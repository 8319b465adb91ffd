"""The one error type of the Entity Lens: bad input or a missing resource, said in one line with what to do."""

from __future__ import annotations


class EntityLensError(ValueError):
    """What was wrong (a layer outside the model, an entity that maps to no token, a model that is not a causal LM,
    a task-vector file that does not match its model, ...) and what to do about it."""
