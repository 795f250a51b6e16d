"""The memo: what a run can answer without asking an agent. Every message in its log by id, each logged call's
answer by key, the problem sets it logged, what each call cost when first asked, the answers a crashed part
left in the journal, and the calls of other runs it reuses (``--reuse AGENT=RUN``)."""

from __future__ import annotations

from typing import Any

from schoolroom.classroom.journal import Answer, Journal
from schoolroom.log import live
from schoolroom.messages import Call, Message, Note, Problem, Unknown, Usage


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

    def add(self, messages: list[Message]) -> None:
        """Messages just logged."""
        self.logged.update((m.id, m) for m in messages)
