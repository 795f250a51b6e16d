"""The call path: every call an agent is asked is keyed (``keys.py``), answered from the memo when it was asked
before (``memo.py``), else sent to its agent, in pieces (``chunks.py``). Calls run at the same time and are
logged in the order the protocol asked them, with every message that crosses, so a concurrent run and a
sequential one write the same log. The items of ``side_by_side`` take turns (``turns.py``)."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec.structs import replace

from schoolroom.agents.hosting.worker import first_done
from schoolroom.classroom.chunks import split
from schoolroom.classroom.handles import AgentHandle
from schoolroom.classroom.journal import Journal
from schoolroom.classroom.keys import brief, call_key, norm
from schoolroom.classroom.memo import Memo
from schoolroom.classroom.pending import UNSET, Pending, Piece, with_answers
from schoolroom.classroom.turns import Turns, side_by_side, take_turn
from schoolroom.classroom.usage import UsageCount
from schoolroom.config import Config
from schoolroom.errors import AgentCallError
from schoolroom.log import Writer
from schoolroom.messages import Call, Message, sequential_ids
from schoolroom.nested import each, leaves

JOURNALED = "journal"  # a piece's ``sent`` when its answer came from the journal: nothing to wait for


class NotInLog(RuntimeError):
    """Replay: the protocol asked a call its log does not answer."""


@dataclass(frozen=True)
class Replaying:
    """A room that asks no agent: every call is answered from the run's log. ``missing`` says, in NotInLog's
    message, why a call the log lacks may be missing and what to do."""

    missing: str


class CallPath:
    """What happens to a call the protocol asks through a handle: keyed, answered from the memo or sent, logged
    in the order asked; what it cost counted."""

    def __init__(self, config: Config, log: Writer, run_id: str, previous: list[Message] = (),
                 reuse: dict[str, list[Message]] | None = None, journal: Journal | None = None,
                 replaying: Replaying | None = None, progress: Callable[[str, int, int], None] | None = None):
        """``replaying``: no agent is asked; a call the log lacks is NotInLog. ``journal``: where
        each answer goes the moment it comes (and the answers a crashed part left there)."""
        self.config, self.log, self.run_id, self.journal, self.replaying = config, log, run_id, journal, replaying
        self.progress = progress or (lambda label, done, total: None)
        self.round = 0  # stamped on every message; calls are keyed by it: a new round asks again
        self.stage_name = ""  # the condition being run (``k=2``), in progress labels and errors: ``stage(...)``
        self.memo = Memo(list(previous), reuse, journal)
        self.costs = UsageCount()
        self.turns: Turns | None = None  # the items of side_by_side taking turns
        self.answered = 0  # calls answered from the log in this process
        self._queue: deque[Pending | list[Message]] = deque()  # calls and records not yet logged, in order asked
        self._inflight: dict[str, Piece] = {}  # call key -> the piece asked and not yet answered
        self._last: dict[str, float] = {}  # agent -> when its last answer came (a piece's seconds start there)

    @contextlib.contextmanager
    def stage(self, text: str):
        """Name the condition the calls inside belong to: progress bars and errors say it."""
        outer, self.stage_name = self.stage_name, text
        try:
            yield
        finally:
            self.stage_name = outer

    def usage(self, agent: str) -> dict[str, float]:
        """What ``agent``'s engine has cost this run so far (inside ``side_by_side``: this item's own calls)."""
        mine = self.turns.mine() if self.turns is not None else None
        return self.costs.of(agent, None if mine is None else self.turns.usage[mine])

    def _count(self, key: str, usage: list, task: int | None) -> None:
        self.costs.count(key, usage, [self.turns.usage[task]] if task is not None and self.turns is not None else [])

    def side_by_side(self, fn: Callable[[Any], Any], items: list) -> list:
        """``[fn(x) for x in items]`` with the items side by side, taking turns (``turns.side_by_side``)."""
        return side_by_side(self, fn, items)

    def record(self, *messages: Message) -> None:
        """Log messages the protocol itself makes (reports, problem sets): after the calls it started before."""
        fresh = [self._stamp(m, "protocol", self.round) for m in messages if m.id not in self.memo.logged]
        self.memo.add(fresh)
        self._queue.append(fresh)
        with sequential_ids(None):
            self._flush()

    def _stamp(self, m: Any, sender: str | None, round: int) -> Any:
        if isinstance(m, Message):
            return replace(m, run_id=self.run_id, round=round, sender=m.sender or sender or "")
        if isinstance(m, list):
            return [self._stamp(x, sender, round) for x in m]
        return m

    def stamp_inputs(self, x: Any, round: int, new: list[Message]) -> Any:
        """Messages the protocol made and passes to an agent: stamped with run and round, and added to ``new``
        (logged before the call's answer). One already logged goes as it was logged (a resumed run remakes it
        unstamped: the agent must not see round 0)."""
        def stamped(m: Any) -> Any:
            if not isinstance(m, Message):
                return m
            if (logged := self.memo.as_logged(m)) is not None:
                return logged
            m = self._stamp(m, "protocol", round)
            new.append(m)
            return m

        return each(x, stamped)

    # ---- calls: started in the order the protocol asks, run at the same time, logged in the order asked
    def call(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Any:
        return self.wait_for(self.submit(handle, method, args, kwargs))

    def submit(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Pending:
        task = self.turns.mine() if self.turns is not None else None
        p = Pending(self, handle, method, args, kwargs, self.round, self.stage_name, task)
        self._queue.append(p)
        if p.effect:  # the agent's state changes: every call asked of it before goes out first
            self._pump(lambda: all(q.pieces is not None for q in self._queue
                                   if isinstance(q, Pending) and q.handle is handle and q is not p))
        self._launch_ready()
        if not self.config.runtime.concurrent:  # one call at a time: the same log, for comparison and debugging
            self._pump(p.done)
        return p

    def wait(self, x: Any) -> Any:
        """``x`` (a started call, or a list, tuple or dict of them) with every started call's answer in its place."""
        return each(x, lambda v: v.result() if isinstance(v, Pending) else v)

    def wait_for(self, p: Pending) -> Any:
        """``p``'s answer: another item of ``side_by_side`` goes on first (always, but after a load, which keeps the
        turn so the item's next call goes out before another item's load), then answers are waited for."""
        if not p.effect:
            take_turn(self)
        if not p.done():
            self._pump(p.done)
        return p.value

    def wait_all(self) -> None:
        """Every started call answered and logged (the runner calls it when the protocol returns)."""
        self._pump(lambda: not self._queue)

    def _launch_ready(self) -> bool:
        """Start every queued call whose arguments are answered, each agent's calls in the order asked; whether
        any started."""
        waiting: set[str] = set()
        started = False
        for p in self._queue:
            if isinstance(p, Pending) and p.pieces is None:
                if p.handle.name not in waiting and p.ready():
                    with sequential_ids(None):  # agents (inline too) and call records make random ids: only
                        self._launch(p)  # protocol code's ids follow the run's sequence
                    started = True
                else:
                    waiting.add(p.handle.name)
        return started

    def _launch(self, p: Pending) -> None:
        handle, method = p.handle, p.method
        args, kwargs = with_answers(p.args), with_answers(p.kwargs)
        fn = getattr(handle.cls, method)
        size = 0 if handle.whole else self.config.runtime.chunk_size
        p.pieces = []
        for piece, kw in split(fn, args, kwargs, size, handle.replicas):  # replay cuts as the run did
            key = call_key(handle.name, method, p.round, piece, kw, [handle.settings, handle.state])
            x = Piece(key)
            p.pieces.append(x)
            if not p.effect and key in self._inflight:
                x.same = self._inflight[key]  # asked already and not yet logged: one answer serves both
            elif (not p.effect or self.replaying) and key in self.memo.answers:
                x.result, x.logged_before = self.memo.answers[key]
                for m in leaves((piece, kw)):  # keyed by ids: a message remade otherwise would get the old answer
                    if isinstance(m, Message):
                        self.memo.as_logged(m)
                x.done = True
                self.answered += 1
                if not x.logged_before:  # another run's answer: logged in this run once
                    self._inflight[key] = x
            elif not p.effect and key in self.memo.journaled:  # answered before a crash, not logged: as if it came now
                a = self.memo.journaled.pop(key)
                x.inputs = []
                self.stamp_inputs(piece, p.round, x.inputs)
                self.stamp_inputs(kw, p.round, x.inputs)
                x.result, x.side, x.seconds, x.came = a.result, a.side, a.seconds, a.time
                x.done, x.sent = True, JOURNALED
                self._inflight[key] = x
            elif self.replaying:
                raise NotInLog(f"{handle.name}.{method} (round {p.round}) {brief(piece, kw)} is not in the log, "
                               f"after {self.answered} calls answered from it: {self.replaying.missing}")
            else:
                x.inputs = []
                piece, kw = self.stamp_inputs(piece, p.round, x.inputs), self.stamp_inputs(kw, p.round, x.inputs)
                x.sent, x.t0 = handle.host.submit(method, *piece, **kw), time.perf_counter()
                self._inflight[key] = x
        done = sum(x.done for x in p.pieces)
        if done and not self.replaying:  # a resumed run counts the pieces its log answered
            self.progress(p.label, done, len(p.pieces))
        if p.effect:
            handle.state, handle.state_by = [method, norm(list(args)), norm(kwargs)], p.task

    def _pump(self, until: Callable[[], bool]) -> None:
        """Wait for answers (whichever comes first), start what they unblock, and log the answered calls at the
        head of the queue, until ``until()``. Agents run inline run here: their ids, and call records', are random."""
        with sequential_ids(None):
            while True:
                while self._launch_ready() | self._flush():  # what is logged may let more calls start, and so on
                    pass
                if until():
                    return
                flying = [(p, x) for p in self._queue if isinstance(p, Pending) and p.pieces is not None
                          for x in p.pieces if x.sent is not None and not x.done]
                if not flying:
                    raise RuntimeError("a started call waits on a call that was never started")  # cannot happen
                timeout = self.config.runtime.call_timeout_s
                i = first_done([x.sent for _, x in flying], timeout)
                p, x = flying[0 if i is None else i]
                try:  # none answered in time: the first one's timeout is said
                    x.result, x.side = p.handle.host.result(x.sent, 0 if i is None else timeout)
                except Exception as e:  # which agent, which call, which round: the cause said in one line
                    self._flush()  # what was answered before it in the order asked is kept
                    raise AgentCallError(p.handle.name, p.method, p.round, e, p.stage) from e
                now = time.perf_counter()
                x.seconds, x.done, x.came = now - max(x.t0, self._last.get(p.handle.name, 0.0)), True, time.time()
                self._last[p.handle.name] = now
                if self.journal is not None and not p.effect:  # on disk now, whatever waits before it in the log
                    _, out, side, call = self._records(p, x.key, x.result, x.side, x.seconds, x.came)
                    self.journal.write(out, side, call)
                self.progress(p.label, sum(y.done or (y.same is not None and y.same.done) for y in p.pieces),
                              len(p.pieces))

    def _flush(self) -> bool:
        """Log what is answered at the head of the queue, in the order the protocol asked; whether any was."""
        before = len(self._queue)
        while self._queue:
            p = self._queue[0]
            if not isinstance(p, Pending):  # messages the protocol recorded while calls were out
                self.log.write(p)
                self._queue.popleft()
                continue
            if p.pieces is None:
                break
            for x in p.pieces[p.flushed:]:
                if x.same is not None:
                    if not x.same.done or x.same.value is UNSET:
                        return len(self._queue) < before
                    x.value, x.done = x.same.value, True
                elif not x.done:
                    return len(self._queue) < before
                elif x.sent is None:  # answered from a log: this one (nothing to write) or a reused run's
                    x.value = x.result if x.logged_before else self._log_call(p, x.key, x.result, [], 0.0)
                    self._count(x.key, self.memo.paid.get(x.key, []), p.task)
                else:
                    inputs = [m for m in x.inputs if m.id not in self.memo.logged]
                    self.log.write(inputs)
                    self.memo.add(inputs)
                    x.value = self._log_call(p, x.key, x.result, x.side, x.seconds, x.came)
                if self._inflight.get(x.key) is x:  # logged: the memo answers it from now on
                    del self._inflight[x.key]
                p.flushed += 1
            values = [x.value for x in p.pieces]
            p.value = values[0] if len(values) == 1 else [v for r in values for v in r]
            self._queue.popleft()
        return len(self._queue) < before

    def _records(self, p: Pending, key: str, result: Any, side: list, seconds: float,
                 came: float | None = None) -> tuple[Any, list[Message], list[Message], Call]:
        """An answer as it is logged: the result stamped, its output messages, the side messages, the Call."""
        name = p.handle.name
        result = self._stamp(result, name, p.round)
        side = self._stamp(side, name, p.round)
        if isinstance(result, Message):
            shape, out, value = "one", [result], None
        elif isinstance(result, list) and all(isinstance(x, Message) for x in result):
            shape, out, value = "list", result, None
        else:
            shape, out, value = "value", [], msgspec.to_builtins(result)
        call = Call(agent=name, method=p.method, key=key, outputs=tuple(m.id for m in out), shape=shape,
                    value=value, seconds=round(seconds, 3), run_id=self.run_id, round=p.round, sender="runtime",
                    **({"time": came} if came is not None else {}))
        return result, out, side, call

    def _log_call(self, p: Pending, key: str, result: Any, side: list, seconds: float,
                  came: float | None = None) -> Any:
        result, out, side, call = self._records(p, key, result, side, seconds, came)
        new = [m for m in out if m.id not in self.memo.logged]
        self._count(key, side, p.task)
        self.log.write(new + side + [call])
        self.memo.add(new + side + [call])
        self.memo.answers[key] = (result, True)
        return result
