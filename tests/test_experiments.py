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


def test_limit_is_written_into_the_problem_sets():
    cfg = configlib.decode({"data": {"a": {"source": "synthetic", "n": 50}, "b": {"source": "gsm8k", "limit": 7},
                                     "c": {"source": "gsm8k"}}})
    capped = configlib.with_limit(cfg, 10)
    assert (capped.data["a"].n, capped.data["b"].limit, capped.data["c"].limit) == (10, 7, 10)
    assert configlib.with_limit(cfg, None) is cfg
