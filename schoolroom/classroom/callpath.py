"""The call path: every call an agent is asked is keyed, answered from the log when it was asked before,
else asked and logged with every message that crosses.

A call's key is its agent, method, round, arguments and the agent's state (its last effect call, e.g. the
adapter it loaded). A resumed run, or a run reusing another run's agent, finds its answered calls by key
and does not ask them again.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from schoolroom.agents.runtime import first_done
from schoolroom.classroom.journal import Journal
from schoolroom.classroom.pending import _UNSET, Aborted, Pending, Piece, Turns, answered
from schoolroom.config import Config
from schoolroom.errors import AgentCallError
from schoolroom.log import Writer, live
from schoolroom.messages import Call, Message, Note, Problem, Unknown, Usage, sequential_ids
from schoolroom.nested import each

if TYPE_CHECKING:
    from schoolroom.classroom.handles import AgentHandle


def _norm(x: Any) -> Any:
    """Arguments as they enter a call key: problems by dataset id (stable across runs), messages by id."""
    if isinstance(x, Problem):
        return "problem:" + x.problem_id
    if isinstance(x, Message):
        return x.id
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in sorted(x.items())}
    return x


JOURNALED = "journal"  # a piece's ``sent`` when its answer came from the journal: nothing to wait for


class NotInLog(RuntimeError):
    """Replay: the protocol asked a call its log does not answer."""


def _brief(args: tuple, kwargs: dict) -> str:
    text = msgspec.json.encode(_norm([list(args), kwargs])).decode()
    return text if len(text) <= 160 else text[:157] + "..."


def call_key(agent: str, method: str, round: int, args: tuple, kwargs: dict, state: Any = None) -> str:
    """What identifies a call: agent, method, round, arguments, and the agent's state (its last effect call,
    e.g. the adapter it loaded), so the same question asked of a changed agent is asked again."""
    blob = msgspec.json.encode([agent, method, round, _norm(list(args)), _norm(kwargs), state])
    return hashlib.sha256(blob).hexdigest()[:24]


class CallPath:
    """What a Classroom does with a call: the memo of answered calls, stamping, chunking, logging, usage."""

    config: Config
    log: Writer
    run_id: str
    round: int
    progress: Callable[[str, int, int], None]
    replaying: str | None = None  # replay: no agent is asked; a call the log lacks is NotInLog, this the hint
    _stage: str = ""  # the condition being run (``k=2``), in progress labels and errors: ``room.stage(...)``

    def _start_calls(self, previous: list[Message], reuse: dict[str, list[Message]],
                     journal: Journal | None = None) -> None:
        self._logged: dict[str, Message] = {m.id: m for m in previous}  # every message in the log, as logged
        self._memo: dict[str, tuple[Any, bool]] = {}
        self._sets: dict[str, list[Problem]] = {}
        self._usage: dict[str, dict[str, float]] = {}
        self._paid: dict[str, list[Usage]] = {}  # call key -> the engine usage logged with it in this run
        self._counted: set[str] = set()  # calls whose usage room.usage already counts
        self._turns: Turns | None = None  # the items of room.side_by_side taking turns
        self.answered = 0  # calls answered from the log in this process
        self._queue: deque[Pending | list[Message]] = deque()  # calls and records not yet logged, in order asked
        self._inflight: dict[str, Piece] = {}  # call key -> the piece asked and not yet answered
        self._last: dict[str, float] = {}  # agent -> when its last answer came (a piece's seconds start there)
        self._remember(previous, logged=True)
        self.journal = journal  # every answer on disk as it comes; a resumed run's answers not yet logged
        self._journaled = {k: a for k, a in journal.answers.items() if k not in self._memo} if journal else {}
        self.recovered = 0  # calls answered from the journal in this process
        for agent, old in reuse.items():
            self._remember([m for m in old if not isinstance(m, Call) or m.agent == agent], logged=False)

    def _remember(self, messages: list[Message], logged: bool) -> None:
        """Index a log's calls (for answering them again) and problem sets (for resuming)."""
        by_id = {m.id: m for m in messages}
        paid: list[Usage] = []
        for m in live(messages):  # a crash's orphans belong to no call
            if isinstance(m, Usage):
                paid.append(m)
            if isinstance(m, Call):
                if logged:
                    self._paid.setdefault(m.key, paid)  # the first time it was asked: what it cost
                paid = []
                if m.shape == "value":
                    result = m.value
                else:
                    items = [by_id[i] for i in m.outputs if i in by_id]
                    if len(items) < len(m.outputs) or any(isinstance(x, Unknown) for x in items):
                        continue  # outputs lost, or of a type this process was not told about: ask again
                    result = items[0] if m.shape == "one" else items
                self._memo[m.key] = (result, logged)
            elif logged and isinstance(m, Note) and m.kind == "problem_set":
                self._sets[m.data["name"]] = [by_id[i] for i in m.data["ids"]]

    @contextlib.contextmanager
    def stage(self, text: str):
        """Name the condition the calls inside belong to (``with room.stage(f"k={k}"):``): progress bars and
        errors say it (``student.solve k=2 (round 1)``)."""
        outer, self._stage = self._stage, text
        try:
            yield
        finally:
            self._stage = outer

    def usage(self, agent: str) -> dict[str, float]:
        """What ``agent``'s engine has cost this run so far, as its log records it: generations, prompt and
        completion tokens of every call the protocol has asked, each counted once (a call answered again in
        the same run, or from another run's log, costs nothing more). A resumed or replayed run gives the same
        numbers as the run in one go. Take the difference around a round for that round's cost. Inside
        ``room.side_by_side``: what this item's own calls cost."""
        mine = self._turns.mine() if self._turns is not None else None
        totals = self._usage if mine is None else self._turns.usage[mine]
        return dict(totals.get(agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}))

    def _count(self, key: str, usage: list, task: int | None) -> None:
        if key in self._counted:
            return
        self._counted.add(key)
        for u in usage:
            if isinstance(u, Usage):
                for totals in [self._usage] + ([self._turns.usage[task]] if task is not None else []):
                    total = totals.setdefault(u.agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
                    for f in total:
                        total[f] += getattr(u, f)

    def side_by_side(self, fn: Callable[[Any], Any], items: list) -> list:
        """``[fn(x) for x in items]`` with the items side by side: when one waits for an answer the next goes on,
        so their agents work at the same time (the paper's variants, a cohort's students). They take turns in a
        fixed order, each waiting for its own answer when its turn comes back, so they ask their calls, make their
        messages and write the log in the same order on every run, resumed or not. The price of that order: an
        item whose answer came early waits for its turn, so items of like shape (variants, students) gain most."""
        if self._turns is not None:
            raise RuntimeError("room.side_by_side inside room.side_by_side: give the outer one every item")
        if len(items) <= 1:
            return [fn(x) for x in items]
        turns = self._turns = Turns(len(items), (self.round, self._stage))
        results: list[Any] = [None] * len(items)

        def task(i: int, x: Any) -> None:
            try:
                turns.start(i)
                self.round, self._stage = turns.outer
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
            self._turns = None
            self.round, self._stage = turns.outer
        if turns.error is not None:
            raise turns.error
        return results

    def _take_turn(self) -> None:
        """Inside ``side_by_side``: let the next item go on; back when the turn comes round again."""
        if self._turns is not None and self._turns.mine() is not None:
            mine = (self.round, self._stage)
            self._turns.pass_on()
            self.round, self._stage = mine

    def record(self, *messages: Message) -> None:
        """Log messages the protocol itself makes (reports, problem sets): after the calls it started before."""
        fresh = [self._stamp(m, "protocol", self.round) for m in messages if m.id not in self._logged]
        self._logged.update((m.id, m) for m in fresh)
        self._queue.append(fresh)
        with sequential_ids(None):
            self._flush()

    def _stamp(self, m: Any, sender: str | None, round: int) -> Any:
        if isinstance(m, Message):
            return replace(m, run_id=self.run_id, round=round, sender=m.sender or sender or "")
        if isinstance(m, list):
            return [self._stamp(x, sender, round) for x in m]
        return m

    def _stamp_inputs(self, x: Any, round: int, new: list[Message]) -> Any:
        """Messages the protocol made and passes to an agent: stamped with run and round, and added to ``new``
        (logged before the call's answer). One already logged goes as it was logged (a resumed run remakes it
        unstamped: the agent must not see round 0)."""
        def stamped(m: Any) -> Any:
            if not isinstance(m, Message):
                return m
            if m.id in self._logged:
                return self._logged[m.id]
            m = self._stamp(m, "protocol", round)
            new.append(m)
            return m

        return each(x, stamped)

    def _split(self, method: Callable, args: tuple, kwargs: dict, size: int, replicas: int) -> list[tuple[tuple, dict]]:
        """Aligned chunks of the parameters ``method`` declares @batched (positional or keyword); the rest whole.
        ``size`` 0: in pieces of one per replica (vLLM batches best with the whole call at once)."""
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

    # ---- calls: started in the order the protocol asks, run at the same time, logged in the order asked
    def _call(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Any:
        return self._submit(handle, method, args, kwargs).result()

    def _submit(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Pending:
        p = Pending(self, handle, method, args, kwargs)
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
        args, kwargs = answered(p.args), answered(p.kwargs)
        fn = getattr(handle.cls, method)
        ac = self.config.agents[handle.name]
        # vLLM batches best with the whole call at once: its calls are cut only to feed replicas
        size = 0 if ac.engine == "vllm" else self.config.runtime.chunk_size
        p.pieces = []
        for piece, kw in self._split(fn, args, kwargs, size, ac.replicas):  # replay cuts as the run did
            key = call_key(handle.name, method, p.round, piece, kw, [handle.settings, handle.state])
            x = Piece(key)
            p.pieces.append(x)
            if not p.effect and key in self._inflight:
                x.same = self._inflight[key]  # asked already and not yet logged: one answer serves both
            elif (not p.effect or self.replaying) and key in self._memo:
                x.result, x.logged_before = self._memo[key]
                x.done = True
                self.answered += 1
                if not x.logged_before:  # another run's answer: logged in this run once
                    self._inflight[key] = x
            elif not p.effect and key in self._journaled:  # answered before a crash, not logged: as if it came now
                a = self._journaled.pop(key)
                x.inputs = []
                self._stamp_inputs(piece, p.round, x.inputs)
                self._stamp_inputs(kw, p.round, x.inputs)
                x.result, x.side, x.seconds, x.came = a.result, a.side, a.seconds, a.time
                x.done, x.sent = True, JOURNALED
                self._inflight[key] = x
                self.recovered += 1
            elif self.replaying:
                raise NotInLog(f"{handle.name}.{method} (round {p.round}) {_brief(piece, kw)} is not in the log, "
                               f"after {self.answered} calls answered from it: {self.replaying}")
            else:
                x.inputs = []
                piece, kw = self._stamp_inputs(piece, p.round, x.inputs), self._stamp_inputs(kw, p.round, x.inputs)
                x.sent, x.t0 = handle.host.submit(method, *piece, **kw), time.perf_counter()
                self._inflight[key] = x
        done = sum(x.done for x in p.pieces)
        if done and not self.replaying:  # a resumed run counts the pieces its log answered
            self.progress(p.label, done, len(p.pieces))
        if p.effect:
            handle.state = [method, _norm(list(args)), _norm(kwargs)]

    def _pump(self, until: Callable[[], bool]) -> None:
        """Wait for answers (whichever comes first), start what they unblock, and log the answered calls at the
        head of the queue, until ``until()``. Agents run inline run here: their ids, and call records', are random."""
        with sequential_ids(None):
            self._pump_until(until)

    def _pump_until(self, until: Callable[[], bool]) -> None:
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
                    if not x.same.done or x.same.value is _UNSET:
                        return len(self._queue) < before
                    x.value, x.done = x.same.value, True
                elif not x.done:
                    return len(self._queue) < before
                elif x.sent is None:  # answered from a log: this one (nothing to write) or a reused run's
                    x.value = x.result if x.logged_before else self._log_call(p, x.key, x.result, [], 0.0)
                    self._count(x.key, self._paid.get(x.key, []), p.task)
                else:
                    inputs = [m for m in x.inputs if m.id not in self._logged]
                    self.log.write(inputs)
                    self._logged.update((m.id, m) for m in inputs)
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
        new = [m for m in out if m.id not in self._logged]
        self._count(key, side, p.task)
        self.log.write(new + side + [call])
        self._logged.update((m.id, m) for m in new + side + [call])
        self._memo[key] = (result, True)
        return result
