"""Message ids: random, or a fixed sequence inside ``sequential_ids(seed)`` (what makes a resumed run recognise
the messages it makes again)."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

_ids: ContextVar[Callable[[], str] | None] = ContextVar("schoolroom_ids", default=None)


def new_id() -> str:
    """A random id; inside ``sequential_ids(seed)``, the next of a sequence that the seed fixes."""
    source = _ids.get()
    return source() if source is not None else uuid.uuid4().hex[:16]


@contextmanager
def sequential_ids(seed: str | None):
    """Ids made in this context follow a fixed sequence for ``seed`` (None: random ids).

    The classroom runs protocol code under ``sequential_ids(run_id)``: a resumed run that makes the
    same messages in the same order gives them the same ids, so calls that take them are recognised.
    """
    if seed is None:
        token = _ids.set(None)
    else:
        counter = itertools.count()
        token = _ids.set(lambda: hashlib.sha256(f"{seed}:{next(counter)}".encode()).hexdigest()[:16])
    try:
        yield
    finally:
        _ids.reset(token)
