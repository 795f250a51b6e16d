"""Intervals for accuracies and paired differences; AUCs (with what they rest on) and their intervals over
problems; where a step score first flags a step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

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


class AucCount(NamedTuple):
    """An AUC with what it rests on: the groups (problems) that had both a correct and a wrong item, and the
    (correct, wrong) pairs compared. ``value`` is None when no pair could be compared."""

    value: float | None
    groups: int
    pairs: int


def auc_count(scores: Sequence[float | None], correct: Sequence[bool], groups: Sequence[Any] | None = None) -> AucCount:
    """``auc`` and how many groups and pairs it compared (one group when ``groups`` is None)."""
    value = auc(scores, correct, groups)
    keys = list(groups) if groups is not None else [None] * len(correct)
    usable = pairs = 0
    for key in dict.fromkeys(keys):
        pos = sum(1 for ok, k in zip(correct, keys) if ok and k == key)
        neg = sum(1 for ok, k in zip(correct, keys) if not ok and k == key)
        usable += pos * neg > 0
        pairs += pos * neg
    return AucCount(value if pairs else None, usable, pairs)


def fmt_auc(a: AucCount) -> str:
    """``0.62 (5 problems, 31 pairs)``; ``— (no problem with both)`` when nothing was measured."""
    if a.value is None:
        return "— (no problem with both a correct and a wrong sample)" if a.groups == 0 else "—"
    return f"{a.value:.2f} ({a.groups} problem{'s' * (a.groups != 1)}, {a.pairs} pair{'s' * (a.pairs != 1)})"


def rank_auc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """The pooled AUC of ``scores`` for ``labels`` (1 correct, 0 wrong) by ranks (Mann-Whitney, ties half):
    the same number as ``auc(scores, labels)``, in O(n log n). None without both kinds."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float) > 0.5
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # average rank (1-based) of each distinct score
    ranks = (starts + (counts + 1) / 2)[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bootstrap_groups(groups: Sequence[Any], statistic, resamples: int = 1000, seed: int = 0
                     ) -> tuple[float, float] | None:
    """A seeded 95% percentile interval of ``statistic(indices)`` when whole groups (problems) are drawn with
    replacement: ``statistic`` gets the item indices of the drawn groups (a group drawn twice counts twice) and
    returns a number or None (a draw it cannot measure is left out). None when fewer than half the draws measured."""
    import numpy as np

    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    blocks = list(members.values())
    if not blocks:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(blocks), size=len(blocks))
        v = statistic([i for b in drawn for i in blocks[b]])
        if v is not None:
            values.append(v)
    if len(values) < resamples / 2:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float], resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): a seeded 95% percentile bootstrap of the mean (e.g. of per-problem differences)."""
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"), float("nan"))
    import numpy as np

    v = np.asarray(values, dtype=float)
    means = v[np.random.default_rng(seed).integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


def first_below(scores: Sequence[float | None], threshold: float = 0.5) -> int | None:
    """The index of the first score below ``threshold`` (the step a PRM flags as the first wrong one); None if
    none is (an unscored step is not flagged)."""
    return next((i for i, s in enumerate(scores) if s is not None and s < threshold), None)


def lowest(scores: Sequence[float | None]) -> int | None:
    """The index of the lowest score (the earliest of equal ones); None when nothing is scored."""
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    return min(scored)[1] if scored else None
