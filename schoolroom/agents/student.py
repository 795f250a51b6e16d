"""The Student: solves problems, optionally continuing a teacher's guidance; loads adapters."""

from __future__ import annotations

import math

from schoolroom.agents.base import Agent, batched, role
from schoolroom.agents.engines import Prompt
from schoolroom.environment import extract_answer, solution_text, split_steps
from schoolroom.environment.prompts import chat, render
from schoolroom.messages import Attempt, Explanation, Guidance, Problem, Reading


def guidance_prefix(g: Guidance | Explanation | None) -> str:
    """The text a student's answer starts with: the guidance steps, one a line (a teacher's explanation as it is)."""
    steps = getattr(g, "steps", ())
    if g is None or not (steps or g.text.strip()):
        return ""
    return ("\n".join(steps) if steps else g.text.strip()).rstrip("\n") + "\n"


def solve_prompt(problem: Problem, prefix: str = "", system: str | None = None) -> Prompt:
    """How a student is asked to solve a problem (also what the trainer trains it on)."""
    return Prompt(messages=chat(render("student_solve", question=problem.question), system), prefix=prefix,
                  task="solve", problem=problem)


def rounded(logprobs: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """Sampling log-probabilities to 4 decimals (compact in the log); None if any is not finite (NaN logits)."""
    if logprobs is None or not all(math.isfinite(x) for x in logprobs):
        return None
    return tuple(round(x, 4) for x in logprobs)


@role("student")
class Student(Agent):

    @batched("problems", "guidance")
    def solve(self, problems: list[Problem], guidance: list[Guidance | Explanation | None] | None = None, n: int = 1,
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
                    logprobs=rounded(c.logprobs),
                    sender=self.name,
                    parents=(p.id,) + ((g.id,) if g is not None else ())))
        return attempts

    @batched("problems", "explanations")
    def read(self, problems: list[Problem], explanations: list[Explanation | None]) -> list[Reading]:
        """How likely the gold solution is to this student after each explanation (RLT's student): its
        log-probability of each token of the explanation's ``token_ids`` (the stop token dropped) after its own
        prompt, then of the gold solution's tokens after them, at temperature 1. ``explanations[i]`` None: the
        solution right after the prompt (the untaught baseline). One Reading per item."""
        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is None:
            self.engine.score([], [])  # an engine that cannot score says so
        special = set(tokenizer.all_special_ids)
        heads, completions = [], []
        for p, e in zip(problems, explanations):
            head: list[int] = []
            if e is not None:
                if e.token_ids is None:
                    raise ValueError(f"explanation {e.id} of {e.problem_id} has no token ids (its teacher's engine "
                                     "gives none): reading a teacher's tokens needs an hf or vllm teacher")
                self.same_tokenizer(e.model, "teacher")
                head = list(e.token_ids)
                while head and head[-1] in special:
                    head.pop()
            gold = ("\n" if head else "") + solution_text(p.gold_steps, p.answer)
            heads.append(len(head))
            completions.append(tuple(head) + tuple(tokenizer.encode(gold, add_special_tokens=False)))
        prompts = [solve_prompt(p, "", self.config.system_prompt) for p in problems]
        scores = self.engine.score(prompts, completions)
        return [Reading(problem_id=p.problem_id, explanation_id=e.id if e is not None else None,
                        explanation_logprobs=tuple(round(x, 4) for x in lp[:k]),
                        solution_logprobs=tuple(round(x, 4) for x in lp[k:]), model=self.engine.model,
                        adapter=self.engine.adapter, sender=self.name, parents=(e.id,) if e is not None else (p.id,))
                for p, e, k, lp in zip(problems, explanations, heads, scores)]
