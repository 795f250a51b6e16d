"""Call keys: what identifies a call, so a resumed, replayed or reusing run finds the calls already answered.

A call's key is its agent, method, round, arguments and the agent's state (its settings that change answers and
its last effect call, e.g. the adapter it loaded): the same question asked of a changed agent is asked again.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from schoolroom.messages import Message, Problem


def norm(x: Any) -> Any:
    """Arguments as they enter a call key: problems by dataset id (stable across runs), messages by id."""
    if isinstance(x, Problem):
        return "problem:" + x.problem_id
    if isinstance(x, Message):
        return x.id
    if isinstance(x, (list, tuple)):
        return [norm(v) for v in x]
    if isinstance(x, dict):
        return {str(k): norm(v) for k, v in sorted(x.items())}
    return x


def call_key(agent: str, method: str, round: int, args: tuple, kwargs: dict, state: Any = None) -> str:
    """What identifies a call: agent, method, round, arguments, and the agent's state (its last effect call,
    e.g. the adapter it loaded), so the same question asked of a changed agent is asked again."""
    blob = msgspec.json.encode([agent, method, round, norm(list(args)), norm(kwargs), state])
    return hashlib.sha256(blob).hexdigest()[:24]


def brief(args: tuple, kwargs: dict) -> str:
    """A call's arguments in at most 160 characters, for errors."""
    text = msgspec.json.encode(norm([list(args), kwargs])).decode()
    return text if len(text) <= 160 else text[:157] + "..."
