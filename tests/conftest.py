"""Shared test setup: offline hub, the shared data directory, one model load and one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("SCHOOLROOM_DATA", str(ROOT.parent / "shared" / "data"))

DATA = Path(os.environ["SCHOOLROOM_DATA"])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.fail(f"the shared data directory {DATA} is missing: check out the project with ../shared beside it")
    return DATA


@pytest.fixture(scope="session")
def hf_engine():
    """The real SmolLM2-135M behind the hf engine, loaded once for the session."""
    from schoolroom.agents.engines.hf import HFEngine

    return HFEngine("smollm2-135m-instruct", batch_size=8)
