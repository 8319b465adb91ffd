"""BibTeX of the papers every card of this library cites; each objective's own source comes from the training record
(``trainers.training_record`` stores the loss's ``citation``), so every entry is written in one place."""

from __future__ import annotations

from typing import Any

MICE = """@misc{vast2026miceminimalinteractioncrossencoders,
    title={MICE: Minimal Interaction Cross-Encoders for efficient Re-ranking},
    author={Mathias Vast and Victor Morand and Basile van Cooten and Laure Soulier and Josiane Mothe and Benjamin Piwowarski},
    year={2026},
    eprint={2602.16299},
    archivePrefix={arXiv},
    primaryClass={cs.IR},
    url={https://arxiv.org/abs/2602.16299},
}"""

DISTILLATION_STUDY = """@misc{morand2026reproducingdistillationcrossencoders,
    title={Reproducing and Comparing Distillation Techniques for Cross-Encoders},
    author={Victor Morand and Mathias Vast and Basile van Cooten and Laure Soulier and Josiane Mothe and Benjamin Piwowarski},
    year={2026},
    eprint={2603.03010},
    archivePrefix={arXiv},
    primaryClass={cs.IR},
    url={https://arxiv.org/abs/2603.03010},
}"""


def _bibtex_key(entry: str) -> str:
    return entry.split("{", 1)[1].split(",", 1)[0].strip()


def citations_for(record: dict[str, Any]) -> list[str]:
    """The BibTeX entries a model card cites: MICE for MICE models, the distillation study for every run (its
    recipes and objectives are what `trainers` implements), and the source of each recorded objective."""
    entries = [MICE] if record.get("model_type") == "mice" else []
    entries.append(DISTILLATION_STUDY)
    for objective in record.get("objectives", []):
        if objective.get("citation"):
            entries.append(str(objective["citation"]).strip())
    unique: dict[str, str] = {}
    for entry in entries:
        unique.setdefault(_bibtex_key(entry), entry)
    return list(unique.values())
