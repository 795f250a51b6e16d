"""The memo: what a run can answer without asking an agent. Every message in its log by id, each logged call's
answer by key, the problem sets it logged, what each call cost when first asked, the answers a crashed part
left in the journal, and the calls of other runs it reuses (``--reuse AGENT=RUN``)."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from schoolroom.classroom.journal import Answer, Journal
from schoolroom.errors import Explained
from schoolroom.log import live
from schoolroom.messages import Call, Message, Note, Problem, Unknown, Usage

ENVELOPE = ("run_id", "round", "sender", "time")  # what the call path stamps on a message, not what the protocol made


class RemadeDiffers(Explained):
    """A resumed run's protocol made a message under an id its log holds, with other content: the config or the
    protocol changed since the run was started, and the agent would be handed the log's message, not this one."""


class Memo:
    def __init__(self, previous: list[Message], reuse: dict[str, list[Message]] | None = None,
                 journal: Journal | None = None):
        self.logged: dict[str, Message] = {m.id: m for m in previous}  # every message in the log, as logged
        self.answers: dict[str, tuple[Any, bool]] = {}  # call key -> (answer, whether this run's log has it)
        self.sets: dict[str, list[Problem]] = {}
        self.paid: dict[str, list[Usage]] = {}  # call key -> the engine usage logged with it in this run
        self.remember(previous, logged=True)
        # answered before a crash and not logged: a resumed run takes them as if they came now
        self.journaled: dict[str, Answer] = {k: a for k, a in journal.answers.items() if k not in self.answers} \
            if journal else {}
        for agent, old in (reuse or {}).items():
            self.remember([m for m in old if not isinstance(m, Call) or m.agent == agent], logged=False)

    def remember(self, messages: list[Message], logged: bool) -> None:
        """Index a log's calls (for answering them again) and problem sets (for resuming)."""
        by_id = {m.id: m for m in messages}
        paid: list[Usage] = []
        for m in live(messages):  # a crash's orphans belong to no call
            if isinstance(m, Usage):
                paid.append(m)
            if isinstance(m, Call):
                if logged:
                    self.paid.setdefault(m.key, paid)  # the first time it was asked: what it cost
                paid = []
                if m.shape == "value":
                    result = m.value
                else:
                    items = [by_id[i] for i in m.outputs if i in by_id]
                    if len(items) < len(m.outputs) or any(isinstance(x, Unknown) for x in items):
                        continue  # outputs lost, or of a type this process was not told about: ask again
                    result = items[0] if m.shape == "one" else items
                self.answers[m.key] = (result, logged)
            elif logged and isinstance(m, Note) and m.kind == "problem_set":
                self.sets[m.data["name"]] = [by_id[i] for i in m.data["ids"]]

    def as_logged(self, made: Message) -> Message | None:
        """The log's message with ``made``'s id (a resumed protocol remakes its messages, unstamped), None when
        the log has none. Raises RemadeDiffers when the two say different things."""
        logged = self.logged.get(made.id)
        if logged is None or isinstance(logged, Unknown):
            return logged
        if (why := differs(logged, made)) is not None:
            raise RemadeDiffers(
                f"the protocol made {type(made).__name__} {made.id} again with other content than its log holds "
                f"({why}): its config or code changed since the run started. Resume or replay it with the config.toml "
                "and the code that started it, or start a new run")
        return logged

    def add(self, messages: list[Message]) -> None:
        """Messages just logged."""
        self.logged.update((m.id, m) for m in messages)


def differs(logged: Message, made: Message) -> str | None:
    """The first field where ``made`` says other than ``logged``, in words; None when they say the same. Values
    are compared as the log holds them: numbers by value (a config's ``32`` comes back as ``32.0``), NaN and
    infinities as the null the log writes for them, tuples as lists. A dict field may hold keys the logged one lacks: a
    TrainRequest's ``hyper`` carries every default since runs made before that."""
    if type(logged) is not type(made):
        return f"a {type(made).__name__} where the log has a {type(logged).__name__}"
    for name in made.__struct_fields__:
        if name in ENVELOPE:
            continue
        was, now = msgspec.to_builtins(getattr(logged, name)), msgspec.to_builtins(getattr(made, name))
        if isinstance(was, dict) and isinstance(now, dict):
            now = {k: now[k] for k in was if k in now}
        if not _same(was, now):
            said = [msgspec.json.encode(x).decode()[:80] for x in (now, was)]
            return f"{name} {said[0]}, the log's {said[1]}"
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    a, b = (None if isinstance(x, float) and not math.isfinite(x) else x for x in (a, b))  # the log: null
    return a == b
