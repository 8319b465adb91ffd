"""Folders of long jobs: files written atomically, and a folder resumed only by a run with its settings.

``mice train``, ``mice convert``, ``mice distill-embedder`` and ``mice quickstart`` resume from what their folder
holds (checkpoints, teacher scores, finished steps). Resumed under other settings, a checkpoint would go on with the
old run's optimizer, schedule and data, and the output would be recorded under the new settings: silently wrong.
:func:`claim_folder` records the settings that decide what a job computes when it starts, and refuses a folder that
another run's settings claimed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SETTINGS_FILE = "run_settings.json"


class WorkFolderError(ValueError):
    """A folder holds the work of a run with other settings."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: readers see the old file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def claim_folder(folder: str | Path, settings: Mapping[str, Any], job: str, fresh: bool = False) -> None:
    """Record ``settings`` in ``folder`` (created if needed), or check that the run which claimed it had the same.

    A folder claimed by no one (new, or from before the record existed) is claimed now; so is any folder with
    ``fresh`` (a run that starts over instead of resuming).

    Raises:
        WorkFolderError: the recorded settings differ (the message names them) or cannot be read.
    """
    folder = Path(folder)
    # Compare what JSON holds (tuples read back as lists, paths as strings).
    settings = json.loads(json.dumps(dict(settings), default=str))
    path = folder / SETTINGS_FILE
    if fresh or not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WorkFolderError(f"{path} is unreadable ({error}): delete {folder} to start the {job} over") from error
    found, settings = _flat(found), _flat(settings)
    differences = sorted(key for key in found.keys() | settings.keys() if found.get(key) != settings.get(key))
    if differences:
        shown = ", ".join(f"{key}: {found.get(key)!r} there, {settings.get(key)!r} now" for key in differences[:3])
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        raise WorkFolderError(
            f"{folder} holds a {job} run with other settings ({shown}{more}): run it with those settings to resume, "
            "or delete the folder (or choose another) to start over"
        )


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"section.name": value}``, so that a difference is named by its own key."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
