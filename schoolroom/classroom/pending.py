"""Calls a protocol started and has not waited for (``room.student.solve.submit(...)``), their pieces, and the
turns the items of ``room.side_by_side`` take."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from schoolroom.messages import Message
from schoolroom.nested import each, leaves

if TYPE_CHECKING:
    from schoolroom.classroom.callpath import CallPath
    from schoolroom.classroom.handles import AgentHandle

_UNSET = object()


class Aborted(BaseException):
    """Another item of ``side_by_side`` failed: this one stops at its turn."""


class Turns:
    """Whose turn it is among the items of ``room.side_by_side``: one runs protocol code at a time, in a fixed
    cycle; an item that finished leaves the cycle."""

    def __init__(self, n: int, outer: tuple):
        self.cond = threading.Condition()
        self.turn, self.live = 0, list(range(n))
        self.outer = outer  # the round and stage each item starts from, and the room goes back to
        self.usage: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
        self.error: BaseException | None = None
        self._local = threading.local()

    def mine(self) -> int | None:
        return getattr(self._local, "i", None)

    def start(self, i: int) -> None:
        self._local.i = i
        self._wait(i)

    def _wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i or self.error is not None)
            if self.error is not None:
                raise Aborted

    def _next(self, i: int) -> int:
        later = [j for j in self.live if j > i]
        return later[0] if later else self.live[0]

    def pass_on(self) -> None:
        i = self.mine()
        with self.cond:
            self.turn = self._next(i)
            self.cond.notify_all()
        self._wait(i)

    def end(self, i: int) -> None:
        with self.cond:
            self.live.remove(i)
            if self.live:
                self.turn = self._next(i)
            self.cond.notify_all()

    def fail(self, e: BaseException) -> None:
        with self.cond:
            self.error = self.error or e
            self.cond.notify_all()


class Piece:
    """One chunk of a call: its key, and where its answer comes from (the log, the agent, or the same chunk of
    another call that is still out)."""

    def __init__(self, key: str):
        self.key = key
        self.result: Any = None
        self.side: list = []
        self.value: Any = _UNSET  # the answer as logged (stamped)
        self.done = False
        self.logged_before = True
        self.same: Piece | None = None
        self.sent: Any = None
        self.inputs: list[Message] = []
        self.t0 = self.seconds = 0.0
        self.came: float | None = None  # when the answer came (wall clock): its Call record's time


class Pending:
    """A call the protocol started (``room.student.solve.submit(problems)``): its agent works on it while the
    protocol goes on. ``.result()`` or ``room.wait(...)`` gives its answer; passed as an argument to another call,
    that call starts when this one is answered. Calls are logged in the order they were asked, whatever order
    they finish in, so a run whose calls overlap writes the log a run asking one at a time writes."""

    def __init__(self, path: CallPath, handle: AgentHandle, method: str, args: tuple, kwargs: dict):
        self._path, self.handle, self.method, self.args, self.kwargs = path, handle, method, args, kwargs
        self.round, self.stage = path.round, path._stage
        self.task = path._turns.mine() if path._turns is not None else None  # the side_by_side item asking it
        self.effect = bool(getattr(getattr(handle.cls, method), "_schoolroom_effect", False))
        self.label = f"{handle.name}.{method}" + (f" {self.stage}" if self.stage else "") + \
            (f" (round {self.round})" if self.round else "")
        self.pieces: list[Piece] | None = None  # None until it starts (its arguments' calls are answered)
        self.flushed = 0
        self.value: Any = _UNSET

    def ready(self) -> bool:
        return not _pending_in(self.args) and not _pending_in(self.kwargs)

    def done(self) -> bool:
        return self.value is not _UNSET

    def result(self) -> Any:
        self._path._take_turn()  # always, answered or not: the turns must not depend on timing
        if not self.done():
            self._path._pump(self.done)
        return self.value


def answered(x: Any) -> Any:
    """``x`` with each started call (answered) replaced by its answer."""
    return each(x, lambda v: v.value if isinstance(v, Pending) else v)


def _pending_in(x: Any) -> bool:
    return any(isinstance(v, Pending) and not v.done() for v in leaves(x))
