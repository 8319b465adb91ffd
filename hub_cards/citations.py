"""BibTeX for the papers a card cites, chosen from what the training run recorded."""

from __future__ import annotations

import re
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

MARGIN_MSE = """@misc{hofstaetter2020improving,
    title={Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
    author={Sebastian Hofst{\\"a}tter and Sophia Althammer and Michael Schr{\\"o}der and Mete Sertkan and Allan Hanbury},
    year={2020},
    eprint={2010.02666},
    archivePrefix={arXiv},
    primaryClass={cs.IR},
    url={https://arxiv.org/abs/2010.02666},
}"""

RANK_DISTILLM = """@inproceedings{schlatt2025rankdistillm,
    title={Rank-DistiLLM: Closing the Effectiveness Gap Between Cross-Encoders and LLMs for Passage Re-ranking},
    author={Schlatt, Ferdinand and Fr{\\"o}be, Maik and Scells, Harrisen and Zhuang, Shengyao and Koopman, Bevan and Zuccon, Guido and Stein, Benno and Potthast, Martin and Hagen, Matthias},
    booktitle={Advances in Information Retrieval (ECIR 2025)},
    year={2025},
    doi={10.1007/978-3-031-88714-7_31},
}"""

# Objective names (as recorded, case-insensitive) -> the paper that introduced them for cross-encoder distillation.
OBJECTIVE_CITATIONS = [
    (re.compile(r"margin.?mse", re.IGNORECASE), MARGIN_MSE),
    (re.compile(r"adr.?mse|distill.?rank.?net|rank.?distillm", re.IGNORECASE), RANK_DISTILLM),
]


def _bibtex_key(entry: str) -> str:
    return entry.split("{", 1)[1].split(",", 1)[0].strip()


def citations_for(record: dict[str, Any]) -> list[str]:
    """The BibTeX entries a model card cites: MICE for MICE models, the distillation study for every run (its
    recipes and objectives are what `trainers` implements), and the source of each recorded objective."""
    entries = [MICE] if record.get("model_type") == "mice" else []
    entries.append(DISTILLATION_STUDY)
    for objective in record.get("objectives", []):
        for pattern, entry in OBJECTIVE_CITATIONS:
            if pattern.search(str(objective.get("name", ""))):
                entries.append(entry)
        if objective.get("citation"):
            entries.append(str(objective["citation"]).strip())
    unique: dict[str, str] = {}
    for entry in entries:
        unique.setdefault(_bibtex_key(entry), entry)
    return list(unique.values())
