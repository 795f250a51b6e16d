"""The training-kind registry: ``@training_kind("kto")`` registers ``fn(trainer, request, data, problems_by_id,
out_dir) -> metrics``, which trains on ``data`` and saves the adapter in ``out_dir``. The trainer it gets offers
what a kind needs to render messages as the student sees them (:class:`Trainee`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from schoolroom.messages import Message, Problem, TrainRequest
from schoolroom.registry import Registry


class Trainee(Protocol):
    """What a training kind may ask of the Trainer agent that runs it."""

    config: Any  # its AgentConfig

    def tokenizer_for(self, model: str = "") -> Any: ...
    def prompt_text(self, problem: Problem, prefix: str = "") -> str: ...
    def explain_text(self, problem: Problem) -> str: ...
    def fit_args(self, request: TrainRequest) -> dict[str, Any]: ...
    def model_path(self, request: TrainRequest) -> str: ...
    def adapter_path(self, version: str | None) -> str | None: ...
    def note(self, kind: str, text: str, **data: Any) -> None: ...


TrainingKind = Callable[[Trainee, TrainRequest, list[Message], dict[str, Problem], str], dict[str, float]]
TRAINING_KINDS: Registry[TrainingKind] = Registry("training kind")


def training_kind(name: str):
    """Register ``fn(trainer, request, data, problems_by_id, out_dir) -> metrics`` as training kind ``name``: it
    trains on ``data`` and saves the adapter in ``out_dir``."""

    def register(fn):
        return TRAINING_KINDS.register(name, fn)

    return register
