"""Cutting a call into pieces: the parameters a method declares ``@batched`` are cut into aligned chunks (each
piece its own call key, so a resumed run keeps the pieces that came back), the rest go whole with each."""

from __future__ import annotations

import inspect
from collections.abc import Callable


def split(method: Callable, args: tuple, kwargs: dict, size: int, replicas: int) -> list[tuple[tuple, dict]]:
    """Aligned chunks of the parameters ``method`` declares @batched (positional or keyword); the rest whole.
    ``size`` 0: in pieces of one per replica (an engine that takes calls whole batches best with all at once)."""
    names = getattr(method, "_schoolroom_batched", ())
    if not names or (size <= 0 and replicas <= 1):
        return [(args, kwargs)]
    bound = inspect.signature(method).bind(None, *args, **kwargs)  # None stands for self
    lists = {k: v for k, v in bound.arguments.items() if k in names and isinstance(v, list)}
    lengths = {len(v) for v in lists.values()}
    if not lists or len(lengths) != 1:
        return [(args, kwargs)]
    n = lengths.pop()
    size = size if size > 0 else -(-n // replicas)
    if n <= size:
        return [(args, kwargs)]
    pieces = []
    for i in range(0, n, size):
        b = inspect.BoundArguments(bound.signature, dict(bound.arguments))
        for k, v in lists.items():
            b.arguments[k] = v[i:i + size]
        pieces.append((b.args[1:], b.kwargs))
    return pieces
