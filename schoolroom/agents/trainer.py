"""The Trainer: turns a TrainRequest and its data messages into an adapter (a TrainResult).

Training itself lives in ``schoolroom.training`` and knows nothing of Ray or messages; a training
*kind* (``kinds.py``, ``reinforce_kinds.py``) renders the messages into the text the student sees (same chat
template, same prompt) and calls it. Kinds are registered functions; a new one is a function and a
registration::

    @training_kind("kto")
    def kto(trainer, request, data, problems, out_dir) -> dict[str, float]: ...

Adapters are named by version: ``<workdir>/adapters/<version>``, plain peft folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from schoolroom import models
from schoolroom.agents import kinds, reinforce_kinds  # noqa: F401  (register sft, reflection, dpo, orm, prm, ppo, grpo)
from schoolroom.agents.base import Agent, role
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import solve_prompt
from schoolroom.agents.teacher import explain_prompt
from schoolroom.messages import Message, Problem, TrainRequest, TrainResult
from schoolroom.training.common import TrainingDiverged
from schoolroom.training.kinds import TRAINING_KINDS, training_kind

__all__ = ["Trainer", "TRAINING_KINDS", "training_kind"]

@role("trainer")
class Trainer(Agent):
    uses_engine = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tokenizers: dict[str, Any] = {}

    def tokenizer_for(self, model: str = ""):
        model = model or self.config.model
        if model not in self._tokenizers:
            self._tokenizers[model] = models.load_tokenizer(model)
        return self._tokenizers[model]

    @property
    def tokenizer(self):
        return self.tokenizer_for()

    def adapters_dir(self) -> Path:
        return Path(self.config.options.get("adapters_dir") or Path(self.workdir) / "adapters")

    def adapter_path(self, version: str | None) -> str | None:
        """Where adapter ``version`` lives: a run's adapter by name, or a folder given by its absolute path."""
        if version is None:
            return None
        return version if Path(version).is_absolute() else str(self.adapters_dir() / version)

    def prompt_text(self, problem: Problem, prefix: str = "") -> str:
        return render_prompt(self.tokenizer, solve_prompt(problem, prefix, self.config.system_prompt))

    def explain_text(self, problem: Problem) -> str:
        return render_prompt(self.tokenizer, explain_prompt(problem, self.config.system_prompt))

    def fit_args(self, request: TrainRequest) -> dict[str, Any]:
        """The arguments every training function takes besides its model, examples and output folder."""
        return dict(lora=request.lora, settings=request.hyper, seed=request.seed, device=self.config.device,
                    dtype=self.config.dtype,
                    init_adapter=self.adapter_path(request.base_adapter), tokenizer=self.tokenizer_for(request.base_model))

    def model_path(self, request: TrainRequest) -> str:
        return models.resolve(request.base_model or self.config.model).path

    def train(self, request: TrainRequest, data: list[Message], problems: list[Problem]) -> TrainResult:
        """Train the adapter ``request`` asks for on ``data`` with its kind (``TRAINING_KINDS``): rationales for
        sft; rationales and the mistakes they answer for reflection; preference pairs for dpo; attempts with
        verdicts or step rewards for orm and prm; rollouts (attempts, explanations) and their StepRewards for ppo and
        grpo."""
        if request.kind not in TRAINING_KINDS:
            raise ValueError(TRAINING_KINDS.unknown(request.kind))
        version = f"{request.name or request.kind}-r{request.round}-{request.id[:6]}"
        out = self.adapters_dir() / version
        shutil.rmtree(out, ignore_errors=True)  # what a crash left half-written: a request is redone from its start
        try:
            metrics = TRAINING_KINDS[request.kind](self, request, data, {p.problem_id: p for p in problems}, str(out))
        except TrainingDiverged as e:
            shutil.rmtree(out, ignore_errors=True)
            kept = request.base_adapter
            why = (f"training {version} ({request.kind}) stopped: {e}; the adapter it started from is kept "
                   f"({kept or 'the base model'})")
            self.note("training_failed", why, adapter=version, step=e.step, what=e.what, value=str(e.value))
            return TrainResult(request_id=request.id, adapter=kept or "", path=self.adapter_path(kept) or "",
                               metrics={"diverged_at_step": float(e.step)}, failed=why, sender=self.name,
                               parents=(request.id,))
        return TrainResult(request_id=request.id, adapter=version, path=str(out), metrics=metrics,
                           sender=self.name, parents=(request.id,))
