"""Markdown tables for the card templates (Jinja writes them with `{{ table }}`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]

    def __str__(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.rows])


def key_value_table(values: dict[str, Any]) -> Table:
    """Two columns, one row per recorded key; nested values are shown as JSON."""
    rows = [[str(k), f"`{json.dumps(v)}`" if isinstance(v, dict | list) else str(v)] for k, v in values.items()]
    return Table(["", ""], rows)
