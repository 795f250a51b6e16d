"""The "human teacher": answers from the dataset's reference solution instead of a model.

Tasks it answers (``Prompt.task``): ``first_steps`` (the first ``args["k"]`` gold steps), ``next_step``
(gold step ``args["j"]``), and ``solve`` and ``tailor`` (the whole gold solution ending in ``#### answer``:
what a human teacher writes for a student who went wrong; after a prefix of j steps, the gold solution from
step j + 1 on). It costs nothing and is exact. It cannot plan or enrich.
"""

from __future__ import annotations

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt
from schoolroom.environment import solution_text


class ReferenceEngine(Engine):
    name = "reference"
    model = "reference"

    def answer(self, prompt: Prompt) -> str:
        p = prompt.problem
        if p is None:
            raise ValueError("the reference engine needs the problem in the prompt")
        if prompt.task == "first_steps":
            return "\n".join(p.gold_steps[: int(prompt.args.get("k", 1))])
        if prompt.task == "next_step":
            return p.gold_steps[int(prompt.args["j"]) - 1] if int(prompt.args["j"]) <= len(p.gold_steps) else ""
        if prompt.task in ("solve", "tailor"):
            done = len([ln for ln in prompt.prefix.splitlines() if ln.strip()])
            return solution_text(p.gold_steps[done:], p.answer)
        raise ValueError(f"the reference engine answers first_steps, next_step, solve and tailor, not "
                         f"{prompt.task or 'a free prompt'!r}: give this teacher a model")

    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        return [[Completion(text=self.answer(p), finish_reason="stop")] * params.n for p in prompts]
