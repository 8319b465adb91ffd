"""Re-rank a first-stage run on BEIR-layout folders and report metrics, significance and latency: ``mice evaluate``
as a script (``python scripts/evaluate.py --help``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mice_rerank.cli import script_main


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("mice_rerank.commands.evaluate", argv, prog="scripts/evaluate.py")


if __name__ == "__main__":
    sys.exit(main())
