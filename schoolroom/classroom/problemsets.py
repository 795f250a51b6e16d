"""Problem sets: a config's ``[data.<name>]`` tables, loaded once and logged so a resumed run reads them back."""

from __future__ import annotations

from collections.abc import Callable

from schoolroom.config import DataConfig
from schoolroom.environment import load, synthetic
from schoolroom.messages import Problem


def load_set(d: DataConfig, other: Callable[[str], list[Problem]]) -> list[Problem]:
    """The problems ``d`` names; ``other(name)`` gives another set of the config (for ``exclude``)."""
    if d.source == "synthetic":
        problems = synthetic(min(d.n, d.limit) if d.limit is not None else d.n, steps=d.steps, seed=d.seed)
    else:
        problems = load(d.source, d.split, data_dir=d.data_dir)[d.offset:]
    if d.exclude:
        seen = {p.question for name in d.exclude for p in other(name)}
        problems = [p for p in problems if p.question not in seen]
    return problems[:d.limit] if d.limit is not None else problems


def describe(d: DataConfig) -> str:
    """A set in a few words, for reports: ``synthetic, [1, 2, 3] steps, seed 2`` or ``gsm8k test from 100``."""
    if d.source == "synthetic":
        return f"synthetic, {d.steps} steps, seed {d.seed}"
    return f"{d.source} {d.split}" + (f" from {d.offset}" if d.offset else "")
