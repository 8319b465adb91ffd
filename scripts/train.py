"""Train a cross-encoder or a MICE re-ranker from a teacher-score dataset: ``mice train`` as a script.

python scripts/train.py run.yaml [--FIELD VALUE ...]
accelerate launch scripts/train.py run.yaml        # several processes, unchanged
"""

import sys

from mice_rerank.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("mice_rerank.commands.train", prog="scripts/train.py"))
