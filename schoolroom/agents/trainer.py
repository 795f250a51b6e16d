"""The Trainer: turns a TrainRequest and its data messages into a LoRA adapter (a TrainResult).

Training itself lives in ``schoolroom.training`` and knows nothing of Ray or messages; this
agent renders the messages into the text the student sees (same chat template, same prompt)
and names the adapter: ``<workdir>/adapters/<version>``, a plain peft folder.
"""

from __future__ import annotations

from pathlib import Path

from schoolroom import models
from schoolroom.agents.base import Agent
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import solve_prompt
from schoolroom.messages import Message, Mistake, PreferencePair, Problem, Rationale, TrainRequest, TrainResult


class Trainer(Agent):
    role = "trainer"
    uses_engine = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = models.load_tokenizer(self.config.model)
        return self._tokenizer

    def adapters_dir(self) -> Path:
        return Path(self.config.options.get("adapters_dir") or Path(self.workdir) / "adapters")

    def prompt_text(self, problem: Problem, prefix: str = "") -> str:
        return render_prompt(self.tokenizer, solve_prompt(problem, prefix, self.config.system_prompt))

    def examples(self, request: TrainRequest, data: list[Message], problems: dict[str, Problem]) -> list[dict]:
        if request.kind == "sft":
            return [{"prompt": self.prompt_text(problems[r.problem_id]), "completion": r.text}
                    for r in data if isinstance(r, Rationale)]
        if request.kind == "reflection":  # correct rationales, each against the wrong solution it answers
            wrong = {m.id: m.text for m in data if isinstance(m, Mistake)}
            return [{"prompt": self.prompt_text(problems[r.problem_id]), "completion": r.text,
                     "negative": wrong.get(r.mistake_id or "", "")} for r in data if isinstance(r, Rationale)]
        if request.kind == "dpo":
            return [{"prompt": self.prompt_text(problems[x.problem_id], x.prefix), "chosen": x.chosen,
                     "rejected": x.rejected} for x in data if isinstance(x, PreferencePair)]
        raise ValueError(f"unknown training kind {request.kind!r}: sft, reflection or dpo")

    def train(self, request: TrainRequest, data: list[Message], problems: list[Problem]) -> TrainResult:
        """Train the adapter ``request`` asks for on ``data``: rationales for sft; rationales and the mistakes
        they answer for reflection (SFT + self-reflection loss); preference pairs for dpo."""
        from schoolroom.training.dpo import train_dpo
        from schoolroom.training.reflection import train_reflection
        from schoolroom.training.sft import train_sft

        version = f"{request.name or request.kind}-r{request.round}-{request.id[:6]}"
        out = self.adapters_dir() / version
        base = str(self.adapters_dir() / request.base_adapter) if request.base_adapter else None
        examples = self.examples(request, data, {p.problem_id: p for p in problems})
        fn = {"sft": train_sft, "dpo": train_dpo, "reflection": train_reflection}[request.kind]
        metrics = fn(models.resolve(self.config.model).path, examples, str(out), lora=request.lora,
                     settings=request.hyper, seed=request.seed, device=self.config.device, init_adapter=base,
                     tokenizer=self.tokenizer)
        return TrainResult(request_id=request.id, adapter=version, path=str(out), metrics=metrics,
                           sender=self.name, parents=(request.id,))
