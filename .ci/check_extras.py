"""CI: every extra of pyproject.toml installs what the modules it covers import.

For each extra, an environment holds the core dependencies and that extra alone (``pip install -e .[extra]``), and
every module the extra covers is imported in it: a module that imports a package its extra does not declare fails
here, not on a user's machine. To keep it fast, the core environment (torch's CPU wheel first, then the core
dependencies, from pip's cache) is built once and each extra's environment starts as a hard-linked copy of it, to
which pip adds the extra's own packages; pip replaces files, never edits them, so the copies stay apart.

    python3 .ci/check_extras.py [--work DIR] [EXTRA ...]

A package listed in ``[tool.setuptools.packages.find]`` that no extra covers fails the check: add it to COVERAGE.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
# What each extra covers: packages (every module in them) or files; "" is the core install, no extra.
COVERAGE = {
    "": ["modeling_mice", "mice_rerank"],
    "data": ["ranking_data"],
    "train": ["trainers"],
    "eval": ["evaluation"],
    "hub": ["hub_cards"],
    "space": ["spaces/mice-rerank-demo/app.py"],
    "entity-lens": ["entity_lens"],
    "embed": ["embeddings"],
    "serve": ["serving"],
    "index": ["indexing"],
}
NOT_CHECKED = {"test", "all"}  # the test tools, and everything together (what CI's test run installs)

# Run in each environment: import every covered module, print the ones that fail and why.
IMPORT_ALL = """
import importlib, importlib.util, pkgutil, sys, traceback
failures = []
for target in sys.argv[1:]:
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location("covered_file", target)
            sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
            spec.loader.exec_module(sys.modules[spec.name])
            continue
        package = importlib.import_module(target)
        for module in pkgutil.walk_packages(package.__path__, target + "."):
            importlib.import_module(module.name)
    except Exception as error:
        failures.append(f"{target}: {type(error).__name__}: {error}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def run(*command: str | Path, quiet: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0 and quiet:
        sys.exit(f"failed: {' '.join(map(str, command))}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def site_packages(environment: Path) -> Path:
    return next((environment / "lib").glob("python3*/site-packages"))


def check_coverage(pyproject: dict) -> None:
    """Every extra but the test tools is checked, and every installed package is covered by an extra."""
    extras = set(pyproject["project"]["optional-dependencies"]) - NOT_CHECKED
    unknown = extras ^ (set(COVERAGE) - {""})
    if unknown:
        sys.exit(f"extras and COVERAGE in .ci/check_extras.py disagree on {sorted(unknown)}")
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    covered = {target for targets in COVERAGE.values() for target in targets}
    if packages - covered:
        sys.exit(f"no extra covers the package(s) {sorted(packages - covered)}: add them to COVERAGE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extras", nargs="*", help="extras to check (default: all of them)")
    parser.add_argument("--work", type=Path, help="folder for the environments (default: a temporary one)")
    args = parser.parse_args()
    check_coverage(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8")))
    work = args.work or Path(tempfile.mkdtemp(prefix="check-extras-"))
    core = work / "core"
    started = time.perf_counter()
    if not (core / "bin" / "python").exists():
        run(sys.executable, "-m", "venv", core)
        run(core / "bin" / "python", "-m", "pip", "install", "-q", TORCH)
        run(core / "bin" / "python", "-m", "pip", "install", "-q", "-e", ".")
    failed = []
    for extra in args.extras or list(COVERAGE):
        environment = core
        if extra:
            environment = work / extra
            shutil.rmtree(environment, ignore_errors=True)
            run("cp", "-al", core, environment)  # hard links: seconds, and no second copy of torch on disk
            # The scripts' shebangs name the core environment's python: run pip as a module of this one.
            run(environment / "bin" / "python", "-m", "pip", "install", "-q", "-e", f".[{extra}]")
        result = run(environment / "bin" / "python", "-c", IMPORT_ALL, *COVERAGE[extra], quiet=False)
        label = f"[{extra}]" if extra else "core"
        print(f"{label}: {'ok' if result.returncode == 0 else 'FAILED'} ({', '.join(COVERAGE[extra])})")
        if result.returncode != 0:
            failed.append(label)
            print(result.stdout + result.stderr[-2000:])
    print(f"checked in {time.perf_counter() - started:.0f} s")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
