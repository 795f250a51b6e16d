"""Handles to agents: ``room.student.solve(...)`` reads like a local call wherever the agent runs.

A handle is found by name (``room.agent("gpt", Teacher)``, typed by the role class given) or by role
(``room.student``, ``room.by_role(Critic)``): the one agent with that role, or of several the one named
after the role.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import msgspec

from schoolroom.agents.base import ROLES, Agent
from schoolroom.agents.engines.factory import spec_of
from schoolroom.config import AgentConfig, RuntimeConfig, declared

A = TypeVar("A", bound=Agent)

# which settings enter call keys, and which a resume may change, as each field of the configs declares it
KEYED = declared(AgentConfig, "call_key")  # what an agent's answers depend on besides the arguments
RESUMABLE_AGENT = declared(AgentConfig, "resumable")
RESUMABLE_RUNTIME = declared(RuntimeConfig, "resumable")


def resumable(key: str) -> bool:
    """Whether ``--set key=...`` may change a run being resumed (``agents.gpt.base_url``: yes;
    ``agents.student.max_tokens``: no, the calls already answered would no longer match)."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "agents":
        return parts[2] in RESUMABLE_AGENT
    return len(parts) >= 2 and parts[0] == "runtime" and parts[1] in RESUMABLE_RUNTIME


class Caller(Protocol):
    """Where a handle sends its calls (the room's call path)."""

    def call(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Any: ...
    def submit(self, handle: AgentHandle, method: str, args: tuple, kwargs: dict) -> Any: ...


class AgentHandle:
    """Calls the agent's methods wherever it runs; every call goes through the room's call path."""

    def __init__(self, calls: Caller, name: str, config: AgentConfig, host):
        self._calls, self.name, self.role, self.host = calls, name, config.role, host
        self.state: Any = None  # the last effect call on this agent (method and arguments), part of call keys
        self.state_by: int | None = None  # the side_by_side item that made it (None: outside side_by_side)
        # what the agent's answers depend on besides the arguments: its config but for where it runs and how
        # fast (a changed model, sampling setting or endpoint is asked again)
        self.settings = {k: v for k, v in msgspec.to_builtins(config).items() if k in KEYED}
        self.whole = spec_of(config.engine).whole  # batches best with a call whole: cut only to feed replicas
        self.replicas = config.replicas

    @property
    def cls(self) -> type[Agent]:
        return ROLES[self.role]

    def check_state(self, method: str, item: int | None) -> None:
        """A side_by_side ``item`` asking this agent in another item's state (that item loaded its adapter last)
        would be answered in that state: an error saying so."""
        if item is not None and self.state_by not in (None, item):
            raise RuntimeError(
                f"{self.name}.{method}: side_by_side item {item} asks agent {self.name} after item {self.state_by} "
                f"changed it ({self.state[0] if self.state else 'an effect call'}), so it would answer in that "
                f"item's state: load (or make the effect call) again in this item before asking it")

    def __getattr__(self, method: str):
        if method.startswith("_") or not callable(getattr(self.cls, method, None)):
            raise AttributeError(f"agent {self.name} ({self.role}) has no method {method!r}")

        def call(*args, **kwargs):
            return self._calls.call(self, method, args, kwargs)

        def submit(*args, **kwargs):
            """Start the call and go on: its answer is ``.result()``, or ``room.wait(...)``; passed to another
            call, that call starts when it is answered."""
            return self._calls.submit(self, method, args, kwargs)

        call.__name__ = method
        call.submit = submit
        return call

    def node_id(self) -> str:
        return self.host.node_id()


def role_name(role: str | type[Agent]) -> str:
    return role if isinstance(role, str) else role.role


def find(agents: dict[str, AgentHandle], role: str | type[Agent]) -> AgentHandle:
    """The one agent with ``role`` (a name or a role class); of several, the one named after the role."""
    name = role_name(role)
    found = [h for h in agents.values() if h.role == name]
    if len(found) > 1 and name in agents and agents[name].role == name:
        return agents[name]
    if not found:
        raise KeyError(f"the config has no agent with role {name}: add one under [agents]")
    if len(found) > 1:
        raise KeyError(f"the config has {len(found)} agents with role {name} and none named {name}; "
                       "use room.agent(name)")
    return found[0]


def typed(handle: AgentHandle, cls: type[A] | None) -> Any:
    """The handle, checked to be an agent of ``cls`` (a role class or a subclass of it)."""
    if cls is not None and not issubclass(handle.cls, cls):
        raise TypeError(f"agent {handle.name} is a {handle.role} ({handle.cls.__name__}), not a {cls.__name__}")
    return handle
