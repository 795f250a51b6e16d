"""The Trainer: turns a TrainRequest and its data messages into an adapter (a TrainResult).

Training itself lives in ``schoolroom.training`` and knows nothing of Ray or messages; a training
*kind* here renders the messages into the text the student sees (same chat template, same prompt)
and calls it. Kinds are registered functions; a new one is a function and a registration::

    @training_kind("kto")
    def kto(trainer, request, data, problems, out_dir) -> dict[str, float]: ...

Adapters are named by version: ``<workdir>/adapters/<version>``, plain peft folders.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schoolroom import models
from schoolroom.agents.base import Agent, role
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import solve_prompt
from schoolroom.messages import Message, Mistake, PreferencePair, Problem, Rationale, TrainRequest, TrainResult
from schoolroom.training.common import TrainingDiverged

TrainingKind = Callable[["Trainer", TrainRequest, list[Message], dict[str, Problem], str], dict[str, float]]
TRAINING_KINDS: dict[str, TrainingKind] = {}


def training_kind(name: str):
    """Register ``fn(trainer, request, data, problems_by_id, out_dir) -> metrics`` as training kind ``name``: it
    trains on ``data`` and saves the adapter in ``out_dir``."""

    def register(fn):
        TRAINING_KINDS[name] = fn
        return fn

    return register


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

    def fit_args(self, request: TrainRequest) -> dict[str, Any]:
        """The arguments every training function takes besides its model, examples and output folder."""
        return dict(lora=request.lora, settings=request.hyper, seed=request.seed, device=self.config.device,
                    init_adapter=self.adapter_path(request.base_adapter), tokenizer=self.tokenizer_for(request.base_model))

    def model_path(self, request: TrainRequest) -> str:
        return models.resolve(request.base_model or self.config.model).path

    def train(self, request: TrainRequest, data: list[Message], problems: list[Problem]) -> TrainResult:
        """Train the adapter ``request`` asks for on ``data`` with its kind (``TRAINING_KINDS``): rationales for
        sft; rationales and the mistakes they answer for reflection; preference pairs for dpo; attempts with
        verdicts or step rewards for orm and prm; rollouts (attempts) and their StepRewards for ppo and grpo."""
        if request.kind not in TRAINING_KINDS:
            raise ValueError(f"unknown training kind {request.kind!r}; known: {', '.join(TRAINING_KINDS)}")
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


def sft_examples(t: Trainer, data: list[Message], problems: dict[str, Problem]) -> list[dict]:
    return [{"prompt": t.prompt_text(problems[r.problem_id]), "completion": r.text}
            for r in data if isinstance(r, Rationale)]


def reflection_examples(t: Trainer, data: list[Message], problems: dict[str, Problem], seed: int = 0) -> list[dict]:
    """Correct rationales, each against the wrong solution it answers (the negative) and with another correct
    rationale of the same question picked at random (the positive, as the authors' collator; "" if none)."""
    wrong = {m.id: m.text for m in data if isinstance(m, Mistake)}
    rationales = [r for r in data if isinstance(r, Rationale)]
    texts: dict[str, list[str]] = {}
    for r in rationales:
        texts.setdefault(r.problem_id, []).append(r.text)
    rng = random.Random(seed)
    out = []
    for r in rationales:
        others = [x for x in texts[r.problem_id] if x != r.text]
        out.append({"prompt": t.prompt_text(problems[r.problem_id]), "completion": r.text,
                    "negative": wrong.get(r.mistake_id or "", ""), "positive": rng.choice(others) if others else ""})
    return out


def dpo_examples(t: Trainer, data: list[Message], problems: dict[str, Problem]) -> list[dict]:
    return [{"prompt": t.prompt_text(problems[x.problem_id], x.prefix), "chosen": x.chosen, "rejected": x.rejected}
            for x in data if isinstance(x, PreferencePair)]


@training_kind("sft")
def sft(t: Trainer, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.sft import train_sft

    return train_sft(t.model_path(request), sft_examples(t, data, problems), out, **t.fit_args(request))


@training_kind("reflection")
def reflection(t: Trainer, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.reflection import train_reflection

    return train_reflection(t.model_path(request), reflection_examples(t, data, problems, request.seed), out,
                            **t.fit_args(request))


@training_kind("dpo")
def dpo(t: Trainer, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.dpo import train_dpo

    return train_dpo(t.model_path(request), dpo_examples(t, data, problems), out, **t.fit_args(request))


from schoolroom.agents import reinforce_kinds  # noqa: E402,F401  (registers orm, prm, ppo, grpo)
