"""The protocol API.

A protocol is a function ``(room, cfg) -> Report`` registered with ``@protocol(name, Config)``.
The :class:`Classroom` gives it typed handles to its agents (``room.student``,
``room.verifier``, ``room.agent("gpt4")``), its problem sets, rounds, and ``room.record``.
Every call through a handle is logged with all the messages that cross, and a call whose
arguments were already answered in the log (a resumed run, or a run reusing another run's
teacher) is answered from the log instead of asking the agent again.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgspec
from msgspec.structs import replace

from schoolroom.agents.runtime import ROLES, spawn
from schoolroom.agents.explorer import Explorer
from schoolroom.agents.student import Student
from schoolroom.agents.teacher import Teacher
from schoolroom.agents.trainer import Trainer
from schoolroom.agents.verifier import Verifier
from schoolroom.config import Config, DataConfig
from schoolroom.environment import load, synthetic
from schoolroom.log import Writer
from schoolroom.messages import Call, EvalReport, Message, Note, Problem, TrainResult, Usage, Verdict, sequential_ids
from schoolroom.protocols.stats import wilson


class Series(msgspec.Struct, frozen=True):
    label: str
    x: list[float]
    y: list[float]
    low: list[float] = []
    high: list[float] = []


class Figure(msgspec.Struct, frozen=True):
    """A plot a protocol asks for (``kind``: line or bar); the runner draws it to ``<name>.png``."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xticks: list[float] = []
    xticklabels: list[str] = []
    kind: str = "line"


class Report(msgspec.Struct):
    title: str
    markdown: str
    metrics: dict[str, Any] = {}
    figures: list[Figure] = []
    files: dict[str, str] = {}  # extra files for the run directory (name -> text), e.g. a dataset as JSONL


PROTOCOLS: dict[str, tuple[Callable[..., Report], type, Callable[[Config, Any], None] | None]] = {}


def protocol(name: str, config: type, check: Callable[[Config, Any], None] | None = None):
    """Register ``fn(room, cfg) -> Report`` as protocol ``name`` with settings Struct ``config``; ``check(config,
    cfg)`` raises ValueError for settings that disagree with the agents (run before anything starts)."""

    def register(fn):
        PROTOCOLS[name] = (fn, config, check)
        return fn

    return register


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


def call_key(agent: str, method: str, round: int, args: tuple, kwargs: dict, state: Any = None) -> str:
    """What identifies a call: agent, method, round, arguments, and the agent's state (its last effect call,
    e.g. the adapter it loaded), so the same question asked of a changed agent is asked again."""
    blob = msgspec.json.encode([agent, method, round, _norm(list(args)), _norm(kwargs), state])
    return hashlib.sha256(blob).hexdigest()[:24]


_PLUMBING = {"resources", "threads", "batch_size", "gpu_memory_utilization", "api_key_env", "timeout_s",
             "max_retries", "backoff_s", "max_backoff_s", "concurrency"}  # settings that leave answers unchanged


class AgentHandle:
    """Calls the agent's methods wherever it runs; ``room.student.solve(...)`` reads like a local call."""

    def __init__(self, room: Classroom, name: str, role: str, host):
        self._room, self.name, self.role, self.host = room, name, role, host
        self.state: Any = None  # the last effect call on this agent (method and arguments), part of call keys
        # what the agent's answers depend on besides the arguments: its config but for where it runs and how
        # fast (a changed model, sampling setting or endpoint is asked again)
        self.settings = {k: v for k, v in msgspec.to_builtins(room.config.agents[name]).items() if k not in _PLUMBING}

    def __getattr__(self, method: str):
        if method.startswith("_") or not callable(getattr(ROLES[self.role], method, None)):
            raise AttributeError(f"agent {self.name} ({self.role}) has no method {method!r}")

        def call(*args, **kwargs):
            return self._room._call(self, method, args, kwargs)

        call.__name__ = method
        return call

    def node_id(self) -> str:
        return self.host.node_id()


class Classroom:
    def __init__(self, config: Config, log: Writer, run_id: str, previous: list[Message] = (),
                 reuse: dict[str, list[Message]] | None = None,
                 progress: Callable[[str, int, int], None] | None = None, workdir: str = "."):
        self.config, self.log, self.run_id, self.workdir = config, log, run_id, workdir
        self.round = 0
        self.progress = progress or (lambda label, done, total: None)
        self._logged: set[str] = {m.id for m in previous}
        self._memo: dict[str, tuple[Any, bool]] = {}
        self._sets: dict[str, list[Problem]] = {}
        self._usage: dict[str, dict[str, float]] = {}
        self._remember(previous, logged=True)
        for agent, old in (reuse or {}).items():
            self._remember([m for m in old if not isinstance(m, Call) or m.agent == agent], logged=False)
        self.agents: dict[str, AgentHandle] = {}
        for name, ac in config.agents.items():
            self.agents[name] = AgentHandle(self, name, ac.role, spawn(name, ac, config.runtime, workdir))
        self._wait_ready()

    # ---- setup and resume
    def _remember(self, messages: list[Message], logged: bool) -> None:
        """Index a log's calls (for answering them again) and problem sets (for resuming)."""
        by_id = {m.id: m for m in messages}
        for m in messages:
            if isinstance(m, Call):
                if m.shape == "value":
                    result = m.value
                else:
                    items = [by_id[i] for i in m.outputs if i in by_id]
                    if len(items) < len(m.outputs):
                        continue  # outputs lost: ask again
                    result = items[0] if m.shape == "one" else items
                self._memo[m.key] = (result, logged)
            elif logged and isinstance(m, Note) and m.kind == "problem_set":
                self._sets[m.data["name"]] = [by_id[i] for i in m.data["ids"]]

    def _wait_ready(self) -> None:
        futures = [(h, h.host.submit("ready")) for h in self.agents.values()]
        for h, fut in futures:
            h.host.result(fut, self.config.runtime.call_timeout_s)
            self.progress(f"started {h.name}", 1, 1)

    def close(self) -> None:
        for h in self.agents.values():
            try:
                h.host.kill()
            except Exception:  # an actor already gone
                pass

    # ---- what protocols use
    def agent(self, name: str) -> Any:
        if name not in self.agents:
            raise KeyError(f"no agent {name!r} in the config; agents: {', '.join(self.agents)}")
        return self.agents[name]

    def describe(self, name: str) -> str:
        """How an agent generates, for reports: ``hf smollm2-135m-instruct``, ``gold solutions (reference)``."""
        a = self.config.agents[name]
        return "gold solutions (reference)" if a.engine == "reference" else f"{a.engine} {a.model}"

    def _by_role(self, role: str) -> Any:
        """The one agent with ``role``; of several, the one named after the role (``[agents.verifier]``)."""
        found = [h for h in self.agents.values() if h.role == role]
        if len(found) > 1 and role in self.agents and self.agents[role].role == role:
            return self.agents[role]
        if not found:
            raise KeyError(f"the config has no agent with role {role}: add one under [agents]")
        if len(found) > 1:
            raise KeyError(f"the config has {len(found)} agents with role {role} and none named {role}; "
                           "use room.agent(name)")
        return found[0]

    @property
    def student(self) -> Student:
        return cast(Student, self._by_role("student"))

    @property
    def verifier(self) -> Verifier:
        return cast(Verifier, self._by_role("verifier"))

    @property
    def teacher(self) -> Teacher:
        return cast(Teacher, self._by_role("teacher"))

    @property
    def explorer(self) -> Explorer:
        return cast(Explorer, self._by_role("explorer"))

    @property
    def trainer(self) -> Trainer:
        return cast(Trainer, self._by_role("trainer"))

    def evaluate(self, name: str, problems: list[Problem], adapter: TrainResult | None = None) -> list[Verdict]:
        """The student (with ``adapter`` loaded, or the base model) solves ``problems`` greedily; an EvalReport
        named ``name`` is logged. Returns the verdicts."""
        self.student.load(adapter)
        attempts = self.student.solve(problems)
        verdicts = self.verifier.check(attempts, problems)
        correct = sum(v.correct for v in verdicts)
        p, lo, hi = wilson(correct, len(verdicts))
        self.record(EvalReport(name=name, n=len(verdicts), correct=correct, accuracy=p, ci_low=lo, ci_high=hi,
                               adapter=adapter.adapter if adapter else None))
        return verdicts

    def problems(self, name: str) -> list[Problem]:
        """The problem set ``[data.<name>]``, loaded once and logged (a resumed run reads it from the log)."""
        if name not in self._sets:
            if name not in self.config.data:
                raise KeyError(f"no problem set {name!r}: add [data.{name}] to the config")
            with sequential_ids(None):  # a resumed run reads the set back from the log: it makes no ids
                problems = [replace(p, run_id=self.run_id, sender="environment")
                            for p in self._load_set(self.config.data[name])]
                note = Note(kind="problem_set", text=f"{len(problems)} problems in set {name}",
                            data={"name": name, "ids": [p.id for p in problems]})
            self.record(*problems, note)
            self._sets[name] = problems
        return self._sets[name]

    def _load_set(self, d: DataConfig) -> list[Problem]:
        if d.source == "synthetic":
            problems = synthetic(min(d.n, d.limit) if d.limit is not None else d.n, steps=d.steps, seed=d.seed)
        else:
            problems = load(d.source, d.split, data_dir=d.data_dir)[d.offset:]
        if d.exclude:
            seen = {p.question for name in d.exclude for p in self.problems(name)}
            problems = [p for p in problems if p.question not in seen]
        return problems[:d.limit] if d.limit is not None else problems

    def usage(self, agent: str) -> dict[str, float]:
        """What ``agent``'s engine has cost in this run so far (calls answered from the log cost nothing):
        generations, prompt and completion tokens. Take the difference around a round for that round's cost."""
        return dict(self._usage.get(agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}))

    def rounds(self, n: int, start: int = 1) -> Iterator[int]:
        for r in range(start, start + n):
            self.round = r
            yield r

    def record(self, *messages: Message) -> None:
        """Log messages the protocol itself makes (reports, problem sets)."""
        fresh = [self._stamp(m, "protocol") for m in messages if m.id not in self._logged]
        self.log.write(fresh)
        self._logged.update(m.id for m in fresh)

    # ---- the call path
    def _stamp(self, m: Any, sender: str | None = None) -> Any:
        if isinstance(m, Message):
            return replace(m, run_id=self.run_id, round=self.round, sender=m.sender or sender or "")
        if isinstance(m, list):
            return [self._stamp(x, sender) for x in m]
        return m

    def _stamp_inputs(self, x: Any) -> Any:
        """Messages the protocol made and passes to an agent: stamped with run and round, and logged first."""
        if isinstance(x, Message):
            if x.id in self._logged:
                return x
            x = self._stamp(x, "protocol")
            self.log.write([x])
            self._logged.add(x.id)
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
        fn = getattr(ROLES[handle.role], method)
        effect = bool(getattr(fn, "_schoolroom_effect", False))
        # vLLM batches best with the whole call at once: its calls are not cut into chunks
        size = 0 if self.config.agents[handle.name].engine == "vllm" else self.config.runtime.chunk_size
        pieces = self._split(fn, args, kwargs, size)
        results: list[Any] = [None] * len(pieces)
        pending = []
        for i, (piece, kw) in enumerate(pieces):
            key = call_key(handle.name, method, self.round, piece, kw, [handle.settings, handle.state])
            if not effect and key in self._memo:
                result, logged = self._memo[key]
                results[i] = result if logged else self._log_call(handle, method, key, result, [], 0.0)
                continue
            piece, kw = self._stamp_inputs(piece), self._stamp_inputs(kw)
            pending.append((i, key, piece, kw))
        label = f"{handle.name}.{method}" + (f" (round {self.round})" if self.round else "")
        done = len(pieces) - len(pending)
        futures = [(i, key, handle.host.submit(method, *piece, **kw)) for i, key, piece, kw in pending]
        t0 = time.perf_counter()
        for i, key, fut in futures:
            result, side = handle.host.result(fut, self.config.runtime.call_timeout_s)
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
        for u in side:
            if isinstance(u, Usage):
                total = self._usage.setdefault(u.agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
                for f in total:
                    total[f] += getattr(u, f)
        call = Call(agent=handle.name, method=method, key=key, outputs=tuple(m.id for m in out), shape=shape,
                    value=value, seconds=round(seconds, 3), run_id=self.run_id, round=self.round,
                    sender="runtime")
        self.log.write(new + side + [call])
        self._logged.update(m.id for m in new + side + [call])
        self._memo[key] = (result, True)
        return result
