"""Arguments as protocols pass them: values nested in lists, tuples and dicts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def each(x: Any, fn: Callable[[Any], Any]) -> Any:
    """``x`` with ``fn`` applied to every value that is not a list, tuple or dict (those keep their shape)."""
    if isinstance(x, (list, tuple)):
        return type(x)(each(v, fn) for v in x)
    if isinstance(x, dict):
        return {k: each(v, fn) for k, v in x.items()}
    return fn(x)


def leaves(x: Any) -> Iterator[Any]:
    """Every value in ``x`` that is not a list, tuple or dict, in order."""
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from leaves(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from leaves(v)
    else:
        yield x
