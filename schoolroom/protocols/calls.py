"""The call path: every call an agent is asked is keyed, answered from the log when it was asked before,
else asked and logged with every message that crosses.

A call's key is its agent, method, round, arguments and the agent's state (its last effect call, e.g. the
adapter it loaded). A resumed run, or a run reusing another run's agent, finds its answered calls by key
and does not ask them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from schoolroom.config import Config
from schoolroom.errors import AgentCallError
from schoolroom.log import Writer
from schoolroom.messages import Call, Message, Note, Problem, Unknown, Usage, sequential_ids
from schoolroom.protocols.replay import live

if TYPE_CHECKING:
    from schoolroom.protocols.handles import AgentHandle


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

    def _start_calls(self, previous: list[Message], reuse: dict[str, list[Message]]) -> None:
        self._logged: dict[str, Message] = {m.id: m for m in previous}  # every message in the log, as logged
        self._memo: dict[str, tuple[Any, bool]] = {}
        self._sets: dict[str, list[Problem]] = {}
        self._usage: dict[str, dict[str, float]] = {}
        self._paid: dict[str, list[Usage]] = {}  # call key -> the engine usage logged with it in this run
        self._counted: set[str] = set()  # calls whose usage room.usage already counts
        self.answered = 0  # calls answered from the log in this process
        self._remember(previous, logged=True)
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
        numbers as the run in one go. Take the difference around a round for that round's cost."""
        return dict(self._usage.get(agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}))

    def _count(self, key: str, usage: list) -> None:
        if key in self._counted:
            return
        self._counted.add(key)
        for u in usage:
            if isinstance(u, Usage):
                total = self._usage.setdefault(u.agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
                for f in total:
                    total[f] += getattr(u, f)

    def record(self, *messages: Message) -> None:
        """Log messages the protocol itself makes (reports, problem sets)."""
        fresh = [self._stamp(m, "protocol") for m in messages if m.id not in self._logged]
        self.log.write(fresh)
        self._logged.update((m.id, m) for m in fresh)

    def _stamp(self, m: Any, sender: str | None = None) -> Any:
        if isinstance(m, Message):
            return replace(m, run_id=self.run_id, round=self.round, sender=m.sender or sender or "")
        if isinstance(m, list):
            return [self._stamp(x, sender) for x in m]
        return m

    def _stamp_inputs(self, x: Any) -> Any:
        """Messages the protocol made and passes to an agent: stamped with run and round, and logged first. One
        already logged goes as it was logged (a resumed run remakes it unstamped: the agent must not see round 0)."""
        if isinstance(x, Message):
            if x.id in self._logged:
                return self._logged[x.id]
            x = self._stamp(x, "protocol")
            self.log.write([x])
            self._logged[x.id] = x
            return x
        if isinstance(x, (list, tuple)):
            return type(x)(self._stamp_inputs(v) for v in x)
        if isinstance(x, dict):
            return {k: self._stamp_inputs(v) for k, v in x.items()}
        return x

    def _split(self, method: Callable, args: tuple, kwargs: dict, size: int) -> list[tuple[tuple, dict]]:
        """Aligned chunks of the parameters ``method`` declares @batched (positional or keyword); the rest whole."""
        names = getattr(method, "_schoolroom_batched", ())
        if not names or size <= 0:
            return [(args, kwargs)]
        bound = inspect.signature(method).bind(None, *args, **kwargs)  # None stands for self
        lists = {k: v for k, v in bound.arguments.items() if k in names and isinstance(v, list)}
        lengths = {len(v) for v in lists.values()}
        if not lists or len(lengths) != 1 or lengths.pop() <= size:
            return [(args, kwargs)]
        n = len(next(iter(lists.values())))
        pieces = []
        for i in range(0, n, size):
            b = inspect.BoundArguments(bound.signature, dict(bound.arguments))
            for k, v in lists.items():
                b.arguments[k] = v[i:i + size]
            pieces.append((b.args[1:], b.kwargs))
        return pieces

    def _call(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Any:
        with sequential_ids(None):  # agents (inline too) and call records make random ids: only protocol
            return self._ask(handle, method, args, kwargs)  # code's ids follow the run's sequence

    def _ask(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Any:
        fn = getattr(handle.cls, method)
        effect = bool(getattr(fn, "_schoolroom_effect", False))
        # vLLM batches best with the whole call at once: its calls are not cut into chunks
        size = 0 if self.config.agents[handle.name].engine == "vllm" else self.config.runtime.chunk_size
        pieces = self._split(fn, args, kwargs, size)
        results: list[Any] = [None] * len(pieces)
        pending = []
        for i, (piece, kw) in enumerate(pieces):
            key = call_key(handle.name, method, self.round, piece, kw, [handle.settings, handle.state])
            if (not effect or self.replaying) and key in self._memo:
                result, logged = self._memo[key]
                results[i] = result if logged else self._log_call(handle, method, key, result, [], 0.0)
                self._count(key, self._paid.get(key, []))
                self.answered += 1
                continue
            if self.replaying:
                raise NotInLog(f"{handle.name}.{method} (round {self.round}) {_brief(piece, kw)} is not in the log, "
                               f"after {self.answered} calls answered from it: {self.replaying}")
            piece, kw = self._stamp_inputs(piece), self._stamp_inputs(kw)
            pending.append((i, key, piece, kw))
        label = f"{handle.name}.{method}" + (f" {self._stage}" if self._stage else "") + \
            (f" (round {self.round})" if self.round else "")
        done = len(pieces) - len(pending)
        if done and not self.replaying:  # a resumed run counts the pieces its log answered
            self.progress(label, done, len(pieces))
        futures = [(i, key, handle.host.submit(method, *piece, **kw)) for i, key, piece, kw in pending]
        t0 = time.perf_counter()
        for i, key, fut in futures:
            try:
                result, side = handle.host.result(fut, self.config.runtime.call_timeout_s)
            except Exception as e:  # which agent, which call, which round: the cause said in one line
                raise AgentCallError(handle.name, method, self.round, e, self._stage) from e
            results[i] = self._log_call(handle, method, key, result, side, time.perf_counter() - t0)
            t0 = time.perf_counter()
            done += 1
            self.progress(label, done, len(pieces))
        if effect:
            handle.state = [method, _norm(list(args)), _norm(kwargs)]
        if len(pieces) == 1:
            return results[0]
        return [x for r in results for x in r]

    def _log_call(self, handle: AgentHandle, method: str, key: str, result: Any, side: list, seconds: float) -> Any:
        result = self._stamp(result, handle.name)
        side = self._stamp(side, handle.name)
        if isinstance(result, Message):
            shape, out, value = "one", [result], None
        elif isinstance(result, list) and all(isinstance(x, Message) for x in result):
            shape, out, value = "list", result, None
        else:
            shape, out, value = "value", [], msgspec.to_builtins(result)
        new = [m for m in out if m.id not in self._logged]
        self._count(key, side)
        call = Call(agent=handle.name, method=method, key=key, outputs=tuple(m.id for m in out), shape=shape,
                    value=value, seconds=round(seconds, 3), run_id=self.run_id, round=self.round,
                    sender="runtime")
        self.log.write(new + side + [call])
        self._logged.update((m.id, m) for m in new + side + [call])
        self._memo[key] = (result, True)
        return result
