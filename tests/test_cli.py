"""The `mice` command: verbs over the Python APIs, errors as one line and a hint, Ctrl-C, dataclass flags."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import types
from typing import Literal

import pytest

from mice_rerank import cli
from ranking_data.beir import BeirFormatError


def verb(error: BaseException | None = None, **attributes) -> types.ModuleType:
    """A verb module whose run raises ``error`` (or returns 0)."""
    module = types.ModuleType("fake_verb")

    def run(args):
        if error is not None:
            raise error
        return 0

    module.run = run
    module.__dict__.update(attributes)
    return module


@pytest.mark.parametrize(
    ("error", "status", "first_line", "hint"),
    [
        (BeirFormatError("data/corpus.jsonl is missing"), 2, "error: data/corpus.jsonl is missing", "fix the file"),
        (ValueError("depth must be\n at least 1"), 2, "error: depth must be at least 1", "check the arguments"),
        (FileNotFoundError("run.trec does not exist"), 2, "error: run.trec does not exist", "check the path"),
        (RuntimeError("shapes differ"), 1, "error: RuntimeError: shapes differ", "looks like a bug"),
    ],
)
def test_errors_are_one_line_and_a_hint(capsys, error, status, first_line, hint):
    assert cli.run_command(verb(error), argparse.Namespace(traceback=False)) == status
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == first_line and len(lines) == 2 and lines[1].startswith("hint: ") and hint in lines[1]


def test_traceback_flag_and_interrupt(capsys):
    with pytest.raises(RuntimeError, match="shapes differ"):
        cli.run_command(verb(RuntimeError("shapes differ")), argparse.Namespace(traceback=True))
    module = verb(KeyboardInterrupt(), ON_INTERRUPT="interrupted: run it again to resume")
    assert cli.run_command(module, argparse.Namespace(traceback=False)) == 130
    assert capsys.readouterr().err.strip() == "interrupted: run it again to resume"


def test_help_lists_the_verbs_without_importing_them():
    script = "import sys\nfrom mice_rerank import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
    script += "print(sorted(m for m in ('torch', 'trainers', 'evaluation') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert all(name in result.stdout for name in cli.COMMANDS)
    assert result.stdout.strip().splitlines()[-1] == "[]"


@dataclasses.dataclass
class Settings:
    """Example settings."""

    name: str = dataclasses.field(default="x", metadata={"help": "A name."})
    depth: int = dataclasses.field(default=100, metadata={"help": "A depth."})
    kind: Literal["a", "b"] = "a"
    verbose: bool = False
    cache: bool = True
    folders: list[str] = dataclasses.field(default_factory=list)


def test_dataclass_flags_leave_absent_settings_out(capsys):
    parser = argparse.ArgumentParser()
    assert cli.add_dataclass_arguments(parser, Settings) == ["name", "depth", "kind", "verbose", "cache", "folders"]
    args = parser.parse_args(["--depth", "7", "--verbose", "--no-cache", "--folders", "a", "b"])
    assert cli.dataclass_values(args, Settings) == {"depth": 7, "verbose": True, "cache": False, "folders": ["a", "b"]}
    assert cli.dataclass_values(parser.parse_args([]), Settings) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "c"])
    assert "invalid choice" in capsys.readouterr().err
    assert "A depth. (default: 100)" in " ".join(parser.format_help().split())


def test_quickstart_on_a_folder_that_is_not_beir_fails_at_once(tmp_path, capsys):
    assert cli.main(["quickstart", "--data", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'corpus.jsonl'} is missing") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
