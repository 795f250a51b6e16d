"""Step scores to one reward: the aggregations of Let's Reinforce Step by Step, as plain functions.

``aggregate(scores, how)`` with ``how`` one of ``min | max | avg | prod | last`` (``last``: the score of the
final step, which later work found best for PRMs trained on Monte-Carlo labels). A new aggregation is a
function and a registration::

    @aggregation("median")
    def median(scores): ...

An attempt with no scored step has no aggregate: ``aggregate([], how)`` is None for every ``how``; the caller
decides what such an attempt earns (the RL trainer: its ``empty_reward`` setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from schoolroom.registry import Registry

AGGREGATIONS: Registry[Callable[[Sequence[float]], float]] = Registry("aggregation")


def aggregation(name: str):
    """Register ``fn(scores) -> float`` (scores: a non-empty sequence) as aggregation ``name``."""

    def register(fn):
        return AGGREGATIONS.register(name, fn)

    return register


@aggregation("min")
def _min(scores: Sequence[float]) -> float:
    return min(scores)


@aggregation("max")
def _max(scores: Sequence[float]) -> float:
    return max(scores)


@aggregation("avg")
def _avg(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores)


@aggregation("prod")
def _prod(scores: Sequence[float]) -> float:
    return math.prod(scores)


@aggregation("last")
def _last(scores: Sequence[float]) -> float:
    return scores[-1]


def aggregate(scores: Sequence[float | None], how: str) -> float | None:
    """One score for an attempt from its step scores; None where a step was not scored is left out, and an
    attempt with no scored step gives None."""
    if how not in AGGREGATIONS:
        raise ValueError(AGGREGATIONS.unknown(how))
    known = [float(s) for s in scores if s is not None]
    return AGGREGATIONS[how](known) if known else None
