"""The Student: solves problems, optionally continuing a teacher's guidance; loads adapters."""

from __future__ import annotations

import math

from schoolroom.agents.base import Agent, batched, role
from schoolroom.agents.engines import Prompt
from schoolroom.environment import extract_answer, split_steps
from schoolroom.environment.prompts import chat, render
from schoolroom.messages import Attempt, Guidance, Problem


def guidance_prefix(g: Guidance | None) -> str:
    """The text a student's answer starts with: the guidance steps, one a line."""
    if g is None or not (g.steps or g.text):
        return ""
    return ("\n".join(g.steps) if g.steps else g.text).rstrip("\n") + "\n"


def solve_prompt(problem: Problem, prefix: str = "", system: str | None = None) -> Prompt:
    """How a student is asked to solve a problem (also what the trainer trains it on)."""
    return Prompt(messages=chat(render("student_solve", question=problem.question), system), prefix=prefix,
                  task="solve", problem=problem)


def _rounded(logprobs: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """Sampling log-probabilities to 4 decimals (compact in the log); None if any is not finite (NaN logits)."""
    if logprobs is None or not all(math.isfinite(x) for x in logprobs):
        return None
    return tuple(round(x, 4) for x in logprobs)


@role("student")
class Student(Agent):

    @batched("problems", "guidance")
    def solve(self, problems: list[Problem], guidance: list[Guidance | None] | None = None, n: int = 1,
              temperature: float | None = None, max_tokens: int | None = None) -> list[Attempt]:
        """``n`` attempts per problem (problem-major order); ``guidance[i]`` starts the answer to problem ``i``."""
        guidance = guidance or [None] * len(problems)
        if len(guidance) != len(problems):
            raise ValueError(f"{len(guidance)} guidance for {len(problems)} problems")
        prefixes = [guidance_prefix(g) for g in guidance]
        prompts = [solve_prompt(p, pre, self.config.system_prompt) for p, pre in zip(problems, prefixes)]
        params = self.params(n=n, temperature=temperature, max_tokens=max_tokens, stop_after="####")
        outs = self.generate(prompts, params)
        attempts = []
        for p, g, pre, cs in zip(problems, guidance, prefixes, outs):
            for i, c in enumerate(cs):
                full = pre + c.text
                attempts.append(Attempt(
                    problem_id=p.problem_id, text=c.text, steps=tuple(split_steps(full)), answer=extract_answer(full),
                    prefix=pre, model=self.engine.model, adapter=self.engine.adapter, sample=i,
                    tokens=c.completion_tokens, token_ids=c.token_ids,
                    logprobs=_rounded(c.logprobs),
                    sender=self.name,
                    parents=(p.id,) + ((g.id,) if g is not None else ())))
        return attempts
