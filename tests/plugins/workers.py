"""A role with no model, for the scale-out tests: it says which process answered each item, and can take its time
(so a test can kill it mid-call); and a protocol of two such workers, a slow one asked before a fast one."""

from __future__ import annotations

import os
import time

import msgspec

from schoolroom.api import Agent, Classroom, Report, batched, effect, protocol, role


@role("worker")
class Worker(Agent):
    uses_engine = False
    loaded = ""

    @batched("items")
    def where(self, items: list[int], delay: float = 0.0) -> list[list]:
        """[process id, item, what was loaded] for each item, after ``delay`` seconds."""
        time.sleep(delay)
        return [[os.getpid(), x, self.loaded] for x in items]

    @effect
    def load(self, tag: str) -> str:
        self.loaded = tag
        return tag


class SlowFastSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    delay: float = 5.0  # seconds the slow worker takes


@protocol("slow_fast", SlowFastSettings)
def slow_fast(room: Classroom, cfg: SlowFastSettings) -> Report:
    """A slow call asked first, a fast one after it: the fast answer comes first and waits for its turn in the log
    (the journal keeps it meanwhile)."""
    slow = room.agent("slow").where.submit([0], delay=cfg.delay)
    fast = room.agent("fast").where.submit([1])
    answers = room.wait({"slow": slow, "fast": fast})
    return Report(title="slow and fast", lines=["two workers"], metrics={"items": [r[1] for r in answers["fast"]]})
