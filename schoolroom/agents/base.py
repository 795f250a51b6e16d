"""What every agent shares: a name, its config, an engine, and the side messages it records."""

from __future__ import annotations

import os
import time

from schoolroom.agents.engines import Completion, Engine, Params, Prompt
from schoolroom.config import AgentConfig
from schoolroom.messages import Message, Note, TrainResult, Usage
from schoolroom.registry import Registry


def effect(method):
    """Mark a method that changes the agent's state (loading an adapter): a resumed run calls it again
    instead of answering it from the log."""
    method._schoolroom_effect = True
    return method


def batched(*params: str):
    """Declare the list parameters a method handles item by item (outputs in the same order, items
    independent): the runtime may cut them into aligned chunks. Other arguments always go whole."""

    def mark(method):
        method._schoolroom_batched = params
        return method

    return mark


ROLES: Registry[type[Agent]] = Registry("role")  # role name -> agent class: what a config's ``role`` may name


def role(name: str):
    """Declare an agent class as role ``name`` (``@role("critic") class Critic(Agent): ...``): a config's agent
    may then say ``role = "critic"`` and a protocol gets a handle to it with ``room.agent(name, Critic)``."""

    def register(cls: type[Agent]) -> type[Agent]:
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise TypeError(f"@role({name!r}) goes on a subclass of schoolroom's Agent, not {cls!r}")
        cls.role = name
        return ROLES.register(name, cls)

    return register


class Agent:
    """A plain class with typed methods, messages in and messages out.

    Besides what a method returns, an agent records side messages (``Usage`` of each engine
    call, ``Note`` for a bad output it skipped); the runtime drains them after every call and
    logs them with the results.
    """

    role = ""
    uses_engine = True

    def __init__(self, name: str, config: AgentConfig, engine: Engine | None = None, workdir: str = "."):
        self.name = name
        self.config = config
        self.workdir = workdir  # the run directory: where an agent writes files (adapters)
        self._engine = engine
        self._side: list[Message] = []

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from schoolroom.agents.engines.factory import make_engine

            os.environ["SCHOOLROOM_AGENT"] = self.name  # an engine may keep files of its own (vLLM's compile cache)
            self._engine = make_engine(self.config)
        return self._engine

    def params(self, **over) -> Params:
        c = self.config
        p = dict(max_tokens=c.max_tokens, temperature=c.temperature, top_p=c.top_p, stop=tuple(c.stop), seed=c.seed)
        p.update({k: v for k, v in over.items() if v is not None})
        return Params(**p)

    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        """Call the engine and record one ``Usage`` for the batch: the generations actually run (a greedy request
        for n completions is one), the prompt tokens read and the tokens generated."""
        t = time.perf_counter()
        outs = self.engine.generate(prompts, params) if prompts else []
        made = [c for cs in outs for c in (cs if params.temperature > 0 else cs[:1])]
        self.record(Usage(agent=self.name, engine=self.engine.name, model=self.engine.model,
                          calls=len(made),
                          prompt_tokens=sum(c.prompt_tokens for c in made),
                          completion_tokens=sum(c.completion_tokens for c in made),
                          latency_s=time.perf_counter() - t, errors=getattr(self.engine, "pop_errors", lambda: 0)()))
        return outs

    def record(self, msg: Message) -> None:
        self._side.append(msg)

    def note(self, kind: str, text: str, problem_id: str | None = None, **data) -> None:
        self.record(Note(kind=kind, text=text, problem_id=problem_id, data=data))

    def drain(self) -> list[Message]:
        out, self._side = self._side, []
        return out

    @effect
    def ready(self) -> str:
        """Touch the engine (loading a model is the slow part of starting) and say who we are."""
        if self.uses_engine:
            _ = self.engine
        return self.name

    @effect
    def load(self, result: TrainResult | None) -> str | None:
        """Generate with the adapter of ``result`` from now on (None: the base model); returns its version. A
        training that failed kept the adapter it started from: that one (or the base model)."""
        if result is None or (result.failed and not result.path):
            self.engine.unload_adapter()
            return None
        self.engine.load_adapter(result.adapter, result.path)
        return result.adapter

    def same_tokenizer(self, model: str, whose: str) -> None:
        """Refuse token ids sampled by ``model`` (``whose``: the student, the teacher) when its vocabulary is not
        this agent's: the ids would mean other words."""
        if not model or model == self.engine.model:
            return
        from schoolroom import models

        if models.load_tokenizer(model).get_vocab() != self.engine.tokenizer.get_vocab():
            raise ValueError(f"{self.role} {self.engine.model} and {whose} {model} have different tokenizers: a "
                             f"{self.role} can only score the {whose}'s tokens in its own vocabulary")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
