"""Calls a protocol started and has not waited for (``room.student.solve.submit(...)``), and their pieces."""

from __future__ import annotations

from typing import Any, Protocol

from schoolroom.classroom.handles import AgentHandle
from schoolroom.messages import Message
from schoolroom.nested import each, leaves

UNSET = object()  # no answer yet


class Waiter(Protocol):
    def wait_for(self, p: Pending) -> Any:
        """``p``'s answer, once it has come and is logged."""


class Piece:
    """One chunk of a call: its key, and where its answer comes from (the log, the agent, or the same chunk of
    another call that is still out)."""

    def __init__(self, key: str):
        self.key = key
        self.result: Any = None
        self.side: list = []
        self.value: Any = UNSET  # the answer as logged (stamped)
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

    def __init__(self, waiter: Waiter, handle: AgentHandle, method: str, args: tuple, kwargs: dict, round: int,
                 stage: str = "", task: int | None = None):
        self._waiter, self.handle, self.method, self.args, self.kwargs = waiter, handle, method, args, kwargs
        self.round, self.stage = round, stage
        self.task = task  # the side_by_side item asking it
        self.effect = bool(getattr(getattr(handle.cls, method), "_schoolroom_effect", False))
        if not self.effect:  # not in another side_by_side item's state
            handle.check_state(method, task)
        self.label = f"{handle.name}.{method}" + (f" {self.stage}" if self.stage else "") + \
            (f" (round {self.round})" if self.round else "")
        self.pieces: list[Piece] | None = None  # None until it starts (its arguments' calls are answered)
        self.flushed = 0
        self.value: Any = UNSET

    def ready(self) -> bool:
        return not pending_in(self.args) and not pending_in(self.kwargs)

    def done(self) -> bool:
        return self.value is not UNSET

    def result(self) -> Any:
        return self._waiter.wait_for(self)


def with_answers(x: Any) -> Any:
    """``x`` with each started call (answered) replaced by its answer."""
    return each(x, lambda v: v.value if isinstance(v, Pending) else v)


def pending_in(x: Any) -> bool:
    return any(isinstance(v, Pending) and not v.done() for v in leaves(x))
