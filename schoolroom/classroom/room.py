"""The Classroom: what a protocol sees of a run.

A protocol is a function ``(room, cfg) -> Report``. The room gives it typed handles to its agents
(``room.student``, ``room.verifier``, ``room.agent("gpt4", Teacher)``), its problem sets, rounds, and
``room.record``. Every call through a handle is logged with all the messages that cross, and a call whose
arguments were already answered in the log (a resumed run, or a run reusing another run's teacher) is
answered from the log instead of asking the agent again: the room holds the call path (``callpath.py``) that
does so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from msgspec.structs import replace

from schoolroom.agents.base import Agent
from schoolroom.agents.hosting.actors import Adapters, place, release, spawn
from schoolroom.agents.engines import factory as engines
from schoolroom.agents.explorer import Explorer
from schoolroom.agents.student import Student
from schoolroom.agents.teacher import Teacher
from schoolroom.agents.trainer import Trainer
from schoolroom.agents.verifier import Verifier
from schoolroom.classroom import handles, problemsets
from schoolroom.classroom.callpath import CallPath, Replaying
from schoolroom.classroom.handles import AgentHandle
from schoolroom.classroom.journal import Journal
from schoolroom.config import Config
from schoolroom.errors import AgentCallError
from schoolroom.log import Writer
from schoolroom.messages import EvalReport, Message, Note, Problem, TrainResult, Verdict, sequential_ids
from schoolroom.reporting import report
from schoolroom.reporting.stats import wilson

A = TypeVar("A", bound=Agent)


class Classroom:
    def __init__(self, config: Config, log: Writer, run_id: str, previous: list[Message] = (),
                 reuse: dict[str, list[Message]] | None = None,
                 progress: Callable[[str, int, int], None] | None = None, workdir: str = ".",
                 plugins: tuple[str, ...] = (), replaying: Replaying | None = None,
                 journal: Journal | None = None):
        """``replaying``: start no agent; every call is answered from ``previous`` (the run's log), and a call
        it lacks raises NotInLog saying why it may be missing. ``journal``: where each answer goes the moment it
        comes (and the answers a crashed part left there, which a resumed run does not ask again)."""
        self.config, self.run_id, self.workdir = config, run_id, workdir
        self.progress = progress or (lambda label, done, total: None)
        self.calls = CallPath(config, log, run_id, previous, reuse, journal, replaying, self.progress)
        report.running.set(self)  # compare() logs its EvalReports here
        self.agents: dict[str, AgentHandle] = {}
        adapters = Adapters(config.runtime.shared_fs)  # which agent made which adapter, for agents on other nodes
        self._groups: list = []  # Ray placement groups of agents that share a node
        try:
            placed, self._groups = ({}, []) if replaying else place(config.agents, config.runtime)
            for name, ac in config.agents.items():
                try:
                    host = None if replaying else spawn(name, ac, config.runtime, workdir, plugins, adapters,
                                                        placed.get(name))
                except Exception as e:
                    raise AgentCallError(name, "start", 0, e) from e
                self.agents[name] = AgentHandle(self.calls, name, ac, host)
            if not replaying:
                self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        futures = [(h, h.host.submit("ready")) for h in self.agents.values()]
        for h, fut in futures:
            try:
                h.host.result(fut, self.config.runtime.call_timeout_s)
                h.host.nodes()  # where each replica runs, asked while it is idle
            except Exception as e:
                raise AgentCallError(h.name, "start", 0, e) from e
            self.progress(f"started {h.name}", 1, 1)

    def close(self) -> None:
        for h in self.agents.values():
            if h.host is None:
                continue
            try:
                h.host.kill()
            except Exception:  # an actor already gone
                pass
        release(getattr(self, "_groups", []))
        if report.running.get() is self:
            report.running.set(None)

    # ---- where the protocol is, and its calls
    @property
    def round(self) -> int:
        """The round every message is stamped with; calls are keyed by it (a new round asks again)."""
        return self.calls.round

    def set_round(self, r: int) -> None:
        """Go to round ``r`` (``rounds()`` sets it; ``set_round(0)`` before a condition that starts over)."""
        self.calls.round = r

    def stage(self, text: str):
        """Name the condition the calls inside belong to (``with room.stage(f"k={k}"):``): progress bars and
        errors say it (``student.solve k=2 (round 1)``)."""
        return self.calls.stage(text)

    def usage(self, agent: str) -> dict[str, float]:
        """What ``agent``'s engine has cost this run so far, as its log records it: generations, prompt and
        completion tokens of every call the protocol has asked, each counted once (a call answered again in
        the same run, or from another run's log, costs nothing more). A resumed or replayed run gives the same
        numbers as the run in one go. Take the difference around a round for that round's cost. Inside
        ``room.side_by_side``: what this item's own calls cost."""
        return self.calls.usage(agent)

    def side_by_side(self, fn: Callable[[Any], Any], items: list) -> list:
        """``[fn(x) for x in items]`` with the items side by side: when one waits for an answer the next goes on,
        so their agents work at the same time (the paper's variants, a cohort's students). They take turns in a
        fixed order, so they ask their calls, make their messages and write the log in the same order on every
        run, resumed or not. The price of that order: an item whose answer came early waits for its turn."""
        return self.calls.side_by_side(fn, items)

    def wait(self, x: Any) -> Any:
        """``x`` (a started call, or a list, tuple or dict of them) with every started call's answer in its place."""
        return self.calls.wait(x)

    def record(self, *messages: Message) -> None:
        """Log messages the protocol itself makes (reports, problem sets): after the calls it started before."""
        self.calls.record(*messages)

    def logged(self) -> dict[str, Message]:
        """The messages of the run's log by id (with those waiting for their turn there); not to be changed."""
        return self.calls.memo.logged

    def wait_all(self) -> None:
        """Every started call answered and logged (the runner calls it when the protocol returns)."""
        self.calls.wait_all()

    @property
    def answered(self) -> int:
        """Calls answered from the log in this process."""
        return self.calls.answered

    # ---- agents
    def agent(self, name: str, role: type[A] | None = None) -> A:
        """Agent ``name``; with ``role`` (a role class), checked to be one and typed as one for the editor."""
        if name not in self.agents:
            raise KeyError(f"no agent {name!r} in the config; agents: {', '.join(self.agents)}")
        return handles.typed(self.agents[name], role)

    def by_role(self, role: type[A] | str) -> A:
        """The one agent with ``role``; of several, the one named after the role (``[agents.verifier]``)."""
        return handles.find(self.agents, role)  # type: ignore[return-value]

    def name_of(self, role: type[Agent] | str) -> str:
        """The config name of the agent ``by_role`` gives (for reports and usage)."""
        return self.by_role(role).name  # type: ignore[attr-defined]

    @property
    def student(self) -> Student:
        return self.by_role(Student)

    @property
    def verifier(self) -> Verifier:
        return self.by_role(Verifier)

    @property
    def teacher(self) -> Teacher:
        return self.by_role(Teacher)

    @property
    def explorer(self) -> Explorer:
        return self.by_role(Explorer)

    @property
    def trainer(self) -> Trainer:
        return self.by_role(Trainer)

    def model_of(self, role: type[Agent] | str) -> str:
        """The model of the agent ``by_role`` gives (for reports)."""
        return self.config.agents[self.name_of(role)].model

    def describe(self, name: str) -> str:
        """How an agent generates, for reports: ``hf smollm2-135m-instruct``, ``gold solutions (reference)``."""
        return engines.describe(self.config.agents[name])

    # ---- problems, rounds, evaluation
    def problems(self, name: str) -> list[Problem]:
        """The problem set ``[data.<name>]``, loaded once and logged (a resumed run reads it from the log)."""
        sets = self.calls.memo.sets
        if name not in sets:
            if name not in self.config.data:
                raise KeyError(f"no problem set {name!r}: add [data.{name}] to the config")
            with sequential_ids(None):  # a resumed run reads the set back from the log: it makes no ids
                problems = [replace(p, run_id=self.run_id, sender="environment")
                            for p in problemsets.load_set(self.config.data[name], self.problems)]
                note = Note(kind="problem_set", text=f"{len(problems)} problems in set {name}",
                            data={"name": name, "ids": [p.id for p in problems]})
            self.record(*problems, note)
            sets[name] = problems
        return sets[name]

    def describe_set(self, name: str) -> str:
        return problemsets.describe(self.config.data[name])

    def rounds(self, n: int, start: int = 1, stage: str = "") -> Iterator[int]:
        """Rounds ``start .. start+n-1``, setting ``room.round``: a call asked again in a new round is new.
        ``stage`` names the condition they run (progress and errors say ``student.solve reflection (round 2)``)."""
        with self.stage(stage or self.calls.stage_name):
            for r in range(start, start + n):
                self.calls.round = r
                yield r

    def evaluate(self, name: str, problems: list[Problem], adapter: TrainResult | None = None,
                 student: str | None = None) -> list[Verdict]:
        """The student (``student`` names one of a cohort), with ``adapter`` loaded or the base model, solves
        ``problems`` greedily; an EvalReport named ``name`` is logged. Returns the verdicts."""
        s = self.agent(student, Student) if student else self.student
        with self.stage(name):
            s.load(adapter)
            attempts = s.solve(problems)
            verdicts = self.verifier.check(attempts, problems)
        correct = sum(v.correct for v in verdicts)
        p, lo, hi = wilson(correct, len(verdicts))
        self.record(EvalReport(name=name, n=len(verdicts), correct=correct, accuracy=p, ci_low=lo, ci_high=hi,
                               adapter=adapter.adapter if adapter else None, verdicts=tuple(v.id for v in verdicts)))
        return verdicts
