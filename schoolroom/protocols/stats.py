"""Intervals for accuracies and paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(accuracy, low, high): the Wilson score interval, sound at small n and near 0 or 1."""
    if n == 0:
        return (float("nan"), float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a: Sequence[bool], b: Sequence[bool], resamples: int = 4000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean of b - a, low, high): a seeded percentile bootstrap over problems (pairs stay together)."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must be the same length")
    n = len(a)
    if n == 0:
        return (float("nan"), float("nan"), float("nan"))
    import numpy as np

    d = np.array([int(y) - int(x) for x, y in zip(a, b)], dtype=float)
    means = d[np.random.default_rng(seed).integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def fmt(x: Any, spec: str = ".3f") -> str:
    """A number for a report table; — where it was not measured (None)."""
    return "—" if x is None else format(x, spec)


def fmt_acc(correct: int, n: int) -> str:
    p, lo, hi = wilson(correct, n)
    return "n/a" if n == 0 else f"{100 * p:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({correct}/{n})"


def fmt_diff(d: tuple[float, float, float]) -> str:
    m, lo, hi = d
    return "n/a" if math.isnan(m) else f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def auc(scores: Sequence[float | None], correct: Sequence[bool], groups: Sequence[Any] | None = None) -> float | None:
    """How well ``scores`` rank correct above wrong: the chance a random correct item outscores a random wrong one
    (ties count half); with ``groups``, only pairs from the same group (the same problem: what reranking sees).
    None without a pair to compare or with an unscored item."""
    if any(s is None for s in scores):
        return None
    keys = list(groups) if groups is not None else [None] * len(scores)
    wins = pairs = 0.0
    for key in dict.fromkeys(keys):
        pos = [s for s, ok, k in zip(scores, correct, keys) if ok and k == key]
        neg = [s for s, ok, k in zip(scores, correct, keys) if not ok and k == key]
        wins += sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        pairs += len(pos) * len(neg)
    return wins / pairs if pairs else None
