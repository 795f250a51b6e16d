"""Turns: the items of ``room.side_by_side`` run protocol code one at a time, in a fixed cycle, so they ask their
calls, make their messages and write the log in the same order on every run, resumed or not."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, Protocol


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


class Position(Protocol):
    """Where the protocol is (the call path): its round and stage, and the turns of a side_by_side under way."""

    round: int
    stage_name: str
    turns: Turns | None


def side_by_side(at: Position, fn: Callable[[Any], Any], items: list) -> list:
    """``[fn(x) for x in items]`` with the items side by side: when one waits for an answer the next goes on,
    so their agents work at the same time (the paper's variants, a cohort's students). They take turns in a
    fixed order, each waiting for its own answer when its turn comes back, so they ask their calls, make their
    messages and write the log in the same order on every run, resumed or not. The price of that order: an
    item whose answer came early waits for its turn, so items of like shape (variants, students) gain most."""
    if at.turns is not None:
        raise RuntimeError("room.side_by_side inside room.side_by_side: give the outer one every item")
    if len(items) <= 1:
        return [fn(x) for x in items]
    turns = at.turns = Turns(len(items), (at.round, at.stage_name))
    results: list[Any] = [None] * len(items)

    def task(i: int, x: Any) -> None:
        try:
            turns.start(i)
            at.round, at.stage_name = turns.outer
            results[i] = fn(x)
        except Aborted:
            pass
        except BaseException as e:  # the others stop at their next turn; the first error is raised
            turns.fail(e)
        finally:
            turns.end(i)

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(task, i, x), daemon=True,
                                name=f"side-by-side-{i}") for i, x in enumerate(items)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException as e:  # Ctrl-C: the items stop at their next turn
        turns.fail(e)
        raise
    finally:
        at.turns = None
        at.round, at.stage_name = turns.outer
    if turns.error is not None:
        raise turns.error
    return results


def take_turn(at: Position) -> None:
    """Inside ``side_by_side``: let the next item go on; back when the turn comes round again."""
    if at.turns is not None and at.turns.mine() is not None:
        mine = (at.round, at.stage_name)
        at.turns.pass_on()
        at.round, at.stage_name = mine
