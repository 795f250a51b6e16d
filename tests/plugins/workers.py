"""A role with no model, for the scale-out tests: it says which process answered each item, and can take its time
(so a test can kill it mid-call)."""

from __future__ import annotations

import os
import time

from schoolroom.api import Agent, batched, effect, role


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
