"""The Entity Lens (Morand, Mothe and Piwowarski, arXiv 2510.09421): decode an entity's full mention from a language
model's hidden state with a learned task vector, at every layer.

    from entity_lens import lens
    lens("Marie Curie was born in Warsaw.", "Marie Curie")   # [LayerMention(layer=0, mention=...), ...]

Pieces (each usable alone): `models` (any causal LM; the offline Gemma-3-270m and SmolLM2-135M), `hooks`
(TransformerLens-style hook names on transformers models), `representations` (resid_post at an entity, three modes),
`prompt` (the decoding prompt `<bos> _ >` and its targets), `training` (task vectors and the linear-map variant),
`decoding` (greedy decoding), `metrics`, `task_vectors` (safetensors, Hub, packaged copies), `lens`, `data` and
`experiment` (datasets from offline sources, per-layer runs).
"""

from .decoding import DecodedMention, decode_mentions
from .errors import EntityLensError
from .hooks import HOOK_EMBED, hooks, resid_post, run_with_cache
from .lens import EntityLens, LayerMention, lens
from .metrics import chrf, exact_match, mention_metrics, partial_match
from .models import DEFAULT_MODEL, OFFLINE_MODELS, load_causal_lm
from .prompt import MentionSet, mention_ids
from .representations import EntityMention, extract_representations
from .task_vectors import TaskVector, TaskVectorSet, packaged_task_vectors
from .training import TrainingConfig, TrainingResult, train_task_vector

__all__ = [
    "DEFAULT_MODEL",
    "DecodedMention",
    "EntityLens",
    "EntityLensError",
    "EntityMention",
    "HOOK_EMBED",
    "LayerMention",
    "MentionSet",
    "OFFLINE_MODELS",
    "TaskVector",
    "TaskVectorSet",
    "TrainingConfig",
    "TrainingResult",
    "chrf",
    "decode_mentions",
    "exact_match",
    "extract_representations",
    "hooks",
    "lens",
    "load_causal_lm",
    "mention_ids",
    "mention_metrics",
    "packaged_task_vectors",
    "partial_match",
    "resid_post",
    "run_with_cache",
    "train_task_vector",
]
