"""The journal: every answer on disk the moment it comes back.

The log is written in the order the protocol asked, so an answer that comes early waits in memory behind a
slower call asked before it. The journal (``RUN/journal.jsonl``, the log's format, fsynced per answer) holds each
answer as it arrives: its output messages, what the agent said beside them (usage, notes) and a ``Call`` record.
A crash, a Ctrl-C or a SIGTERM loses none of them; a resumed run takes them from here instead of asking again,
and logs them in the protocol's order as if they had just come. A run that finishes removes its journal (every
answer in it is in the log by then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schoolroom import log as loglib
from schoolroom.messages import Call, Message, Unknown


class Answer:
    """A journaled answer: what the agent returned (as the call path gives it to the protocol), the messages it
    made beside it, the call's seconds and when it came."""

    def __init__(self, result: Any, side: list[Message], seconds: float, time: float):
        self.result, self.side, self.seconds, self.time = result, side, seconds, time


def answers(messages: list[Message]) -> dict[str, Answer]:
    """Call key -> its answer, from a journal's messages (each answer: outputs, side messages, then its Call)."""
    out: dict[str, Answer] = {}
    batch: list[Message] = []
    for m in messages:
        if not isinstance(m, Call):
            batch.append(m)
            continue
        by_id = {x.id: x for x in batch}
        items = [by_id.get(i) for i in m.outputs]
        side = [x for x in batch if x.id not in m.outputs]
        batch = []
        if any(x is None or isinstance(x, Unknown) for x in items):
            continue  # outputs torn off, or of a type this process was not told about: asked again
        result = m.value if m.shape == "value" else items[0] if m.shape == "one" else items
        out[m.key] = Answer(result, side, m.seconds, m.time)
    return out


class Journal:
    """``RUN/journal.jsonl``: read at start (the answers a crashed part left), appended to as answers come."""

    def __init__(self, path: str | Path, run_id: str = ""):
        self.path, self.run_id = Path(path), run_id
        self.previous: list[Message] = loglib.read_all(self.path, on_torn="ignore") if self.path.exists() else []
        self.answers = answers(self.previous)
        self._writer: loglib.Writer | None = None  # opened at the first answer: a run that crashes before has none

    def write(self, outputs: list[Message], side: list[Message], call: Call) -> None:
        if self._writer is None:
            self._writer = loglib.Writer(self.path, run_id=self.run_id)  # cuts a torn line a crash left
        self._writer.write([*outputs, *side, call])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def remove(self) -> None:
        """Every answer is in the log: the journal is spent."""
        self.close()
        self.path.unlink(missing_ok=True)
