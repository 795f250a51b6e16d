"""What each agent's engine has cost a run so far, from the Usage messages logged with each call: every call
counted once (a call answered again in the same run, or from another run's log, costs nothing more)."""

from __future__ import annotations

from typing import Any

from schoolroom.messages import Usage

FIELDS = ("calls", "prompt_tokens", "completion_tokens")


class UsageCount:
    def __init__(self):
        self.totals: dict[str, dict[str, float]] = {}
        self.counted: set[str] = set()  # calls already counted

    def count(self, key: str, usage: list[Any], also: list[dict[str, dict[str, float]]] = ()) -> None:
        """Add call ``key``'s Usage messages to the totals (and to each of ``also``), once per call."""
        if key in self.counted:
            return
        self.counted.add(key)
        for u in usage:
            if isinstance(u, Usage):
                for totals in [self.totals, *also]:
                    total = totals.setdefault(u.agent, dict.fromkeys(FIELDS, 0))
                    for f in total:
                        total[f] += getattr(u, f)

    def of(self, agent: str, totals: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
        return dict((self.totals if totals is None else totals).get(agent, dict.fromkeys(FIELDS, 0)))
