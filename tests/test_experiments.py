"""Every shipped experiment config decodes, protocol settings included."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolroom import config as configlib
from schoolroom.protocols import runner

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_config_decodes(path):
    cfg, _ = configlib.load(path)
    runner.protocol_of(cfg, str(path))
    assert any(a.role == "student" for a in cfg.agents.values())
