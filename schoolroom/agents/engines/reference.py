"""The "human teacher": answers from the dataset's reference solution instead of a model.

Tasks it answers (``Prompt.task``): ``first_steps`` (the first ``args["k"]`` gold steps) and
``solve`` (the whole gold solution ending in ``#### answer``). It costs nothing and is exact.
"""

from __future__ import annotations

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt


class ReferenceEngine(Engine):
    name = "reference"
    model = "reference"

    def answer(self, prompt: Prompt) -> str:
        p = prompt.problem
        if p is None:
            raise ValueError("the reference engine needs the problem in the prompt")
        if prompt.task == "first_steps":
            return "\n".join(p.gold_steps[: int(prompt.args.get("k", 1))])
        if prompt.task == "solve":
            return "\n".join(p.gold_steps + (f"#### {p.answer}",))
        raise ValueError(f"the reference engine answers first_steps and solve, not {prompt.task or 'a free prompt'!r}")

    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        return [[Completion(text=self.answer(p), finish_reason="stop")] * params.n for p in prompts]
