"""The Teacher: guides (the first k steps, or the next step after a student's own), tailors rationales to a
student's mistakes, plans and enriches; with a local model it also grades each token a student wrote.

Each writing method fills a prompt template from ``schoolroom/environment/prompts/`` (a text
file a user can read and change) and parses the reply into messages; a reply that cannot be
parsed becomes a ``Note`` and is skipped, never a crash.
"""

from __future__ import annotations

import re
from typing import Literal

from schoolroom.agents.base import Agent, batched, role
from schoolroom.agents.engines import Prompt
from schoolroom.agents.student import rounded, solve_prompt
from schoolroom.environment import extract_answer, solution_text, split_steps
from schoolroom.environment.prompts import chat, render
from schoolroom.messages import Attempt, Explanation, Guidance, Mistake, Plan, Problem, Rationale, TokenScores

_NUMBERED = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s*", re.IGNORECASE)


def solution_steps(text: str, at_least: int = 2) -> list[str]:
    """A written solution's steps, without the final ``#### answer`` line: one a line; a reply with fewer than
    ``at_least`` lines is split into sentences instead."""
    return split_steps("\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("####")), at_least)


def score_prompt(p: Problem, prefix: str, context: str, system: str | None) -> Prompt:
    """What a teacher reads before the student's tokens it scores: the student's own prompt (``question``), or one
    that also holds the gold solution (``solution``)."""
    if context == "question":
        return solve_prompt(p, prefix, system)
    text = render("teacher_score_solution", question=p.question, solution=solution_text(p.gold_steps, p.answer))
    return Prompt(messages=chat(text, system), prefix=prefix, task="score", problem=p)


def explain_prompt(p: Problem, system: str | None) -> Prompt:
    """How a teacher is asked to explain a problem's gold solution to a student (RLT's teacher: the question and
    the solution in, an explanation out); also what the trainer trains the teacher on."""
    text = render("teacher_explain", question=p.question, solution=solution_text(p.gold_steps, p.answer))
    return Prompt(messages=chat(text, system), task="explain", problem=p)


@role("teacher")
class Teacher(Agent):

    def _ask(self, template: str, problems: list[Problem], task: str, n: int = 1, temperature: float | None = None,
             stop_after: str = "", **fields: list[str]) -> list[list[str]]:
        """Fill ``template`` per problem (``fields`` gives per-problem values) and return ``n`` replies each,
        each ending at the line break after ``stop_after`` when given (the asked-for "#### answer" line)."""
        prompts = [Prompt(messages=chat(render(template, question=p.question, solution=solution_text(p.gold_steps, p.answer),
                                               **{k: v[i] for k, v in fields.items()}), self.config.system_prompt),
                          task=task, problem=p) for i, p in enumerate(problems)]
        if n > 1 and not (temperature or self.config.temperature):
            temperature = 0.7  # n greedy replies would be n copies
        outs = self.generate(prompts, self.params(n=n, temperature=temperature, stop_after=stop_after))
        return [[c.text for c in cs] for cs in outs]

    @batched("problems")
    def guide(self, problems: Problem | list[Problem], k: int,
              writes: Literal["prompt", "solution"] = "prompt") -> Guidance | list[Guidance]:
        """The first ``k`` steps of a solution for each problem (one Guidance per problem).

        ``writes``: ``"prompt"`` asks for the first k steps (``teacher_first_steps``: an instruction-following
        teacher); ``"solution"`` has the teacher solve the problem as the student is asked to (``student_solve``) and
        keeps its first k lines (a teacher fine-tuned on solutions, as the paper's LLaMA teachers), and the
        Guidance carries that solution's final answer."""
        single = isinstance(problems, Problem)
        batch = [problems] if single else list(problems)
        if writes == "solution":
            prompts = [solve_prompt(p, "", self.config.system_prompt) for p in batch]
        else:
            prompts = [Prompt(messages=chat(render("teacher_first_steps", question=p.question, k=str(k)),
                                            self.config.system_prompt),
                              task="first_steps", args={"k": k}, problem=p) for p in batch]
        outs = self.generate(prompts, self.params(n=1, stop_after="####" if writes == "solution" else ""))
        guidance = []
        for p, (c,) in zip(batch, outs):
            steps = solution_steps(c.text, at_least=k)[:k]
            if len(steps) < k:
                self.note("unparsed", f"asked for {k} steps, the reply has {len(steps)}", p.problem_id,
                          reply=c.text, task="first_steps")
            guidance.append(Guidance(problem_id=p.problem_id, kind="first_steps", k=k, steps=tuple(steps),
                                     text="\n".join(steps), teacher=self.name, sender=self.name, parents=(p.id,),
                                     answer=extract_answer(c.text, strict=True) if writes == "solution" else None))
        return guidance[0] if single else guidance

    @batched("problems", "prefixes")
    def next_step(self, problems: list[Problem], prefixes: list[list[str]],
                  writes: Literal["prompt", "solution"] = "prompt") -> list[Guidance]:
        """Step ``len(prefixes[i]) + 1`` of each solution after the steps ``prefixes[i]`` (a student's own):
        Guidance (kind ``next_step``, k = that step's number) of the prefix and the teacher's one step. ``writes`` as
        in ``guide``: asked for the next step (``teacher_next_step``), or the teacher continues the solution."""
        if writes == "solution":
            prompts = [solve_prompt(p, "".join(s + "\n" for s in pre), self.config.system_prompt)
                       for p, pre in zip(problems, prefixes)]
        else:
            prompts = [Prompt(messages=chat(render("teacher_next_step", question=p.question, j=str(len(pre) + 1),
                                                   steps="\n".join(pre) or "(no steps yet)"), self.config.system_prompt),
                              task="next_step", args={"j": len(pre) + 1}, problem=p)
                       for p, pre in zip(problems, prefixes)]
        outs = self.generate(prompts, self.params(n=1, stop=("\n",) if writes == "solution" else None))
        out = []
        for p, pre, (c,) in zip(problems, prefixes, outs):
            step = next((s for s in solution_steps(c.text, at_least=1) if not s.startswith("####")), "")
            if not step:
                self.note("unparsed", f"asked for step {len(pre) + 1}, the reply has none", p.problem_id,
                          reply=c.text, task="next_step")
            steps = (*pre, step) if step else tuple(pre)
            out.append(Guidance(problem_id=p.problem_id, kind="next_step", k=len(pre) + 1, steps=steps,
                                text="\n".join(steps), teacher=self.name, sender=self.name, parents=(p.id,)))
        return out

    @batched("mistakes")
    def tailor(self, mistakes: list[Mistake], problems: list[Problem], n: int = 1,
               temperature: float | None = None, answer_key: str = "solution") -> list[Rationale]:
        """``n`` correct rationales per mistake, written for the student who made it (tailored learning).

        ``answer_key``: what the teacher is shown beside the wrong solution: ``"answer"`` (the gold final
        answer, as in the paper) or ``"solution"`` (the whole reference solution: a small model needs it).
        """
        by_id = {p.problem_id: p for p in problems}
        batch = [by_id[m.problem_id] for m in mistakes]
        keys = [f"The correct final answer is {p.answer}." if answer_key == "answer" else
                f"A correct reference solution:\n{solution_text(p.gold_steps, p.answer)}" for p in batch]
        replies = self._ask("teacher_tailor", batch, "tailor", n=n, temperature=temperature, stop_after="####",
                            wrong_solution=[m.text.strip() for m in mistakes], answer_key=keys)
        out = []
        for m, p, texts in zip(mistakes, batch, replies):
            for text in texts:
                r = self._rationale(text, p, "tailored", (m.id, p.id), mistake_id=m.id)
                if r is not None:
                    out.append(r)
        return out

    def _rationale(self, text: str, p: Problem, source: str, parents: tuple, **extra) -> Rationale | None:
        """A written solution as a Rationale; None (and a Note) when it has no steps or no stated final answer."""
        steps, answer = solution_steps(text), extract_answer(text, strict=True)
        if not steps or answer is None:
            why = "no steps" if not steps else "no final answer (#### x, \\boxed{x} or 'the answer is x')"
            self.note("unparsed", f"{source} reply skipped: {why}", p.problem_id, reply=text, task=source, **extra)
            return None
        return Rationale(problem_id=p.problem_id, text=text.strip(), steps=tuple(steps), answer=answer, source=source,
                         sender=self.name, parents=parents, **extra)

    @batched("problems")
    def plan(self, problems: list[Problem]) -> list[Plan]:
        """ERP: a high-level plan for each problem, written from the human solution (one Plan per problem;
        an unparsable reply gives an empty Plan and a Note)."""
        out = []
        for p, (text,) in zip(problems, self._ask("teacher_plan", problems, "plan")):
            steps = [_NUMBERED.sub("", s).strip() for s in solution_steps(text)]
            steps = [s for s in steps if s]
            if not steps:
                self.note("unparsed", "the plan has no steps", p.problem_id, reply=text, task="plan")
            out.append(Plan(problem_id=p.problem_id, text="\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1)),
                            steps=tuple(steps), sender=self.name, parents=(p.id,)))
        return out

    @batched("problems", "plans")
    def enrich(self, problems: list[Problem], plans: list[Plan]) -> list[Rationale]:
        """ERS: the human solution rewritten along the plan with the skipped steps filled in (unparsable
        replies are noted and skipped)."""
        replies = self._ask("teacher_enrich", problems, "enrich", stop_after="####",
                            plan=[pl.text or "(no plan)" for pl in plans])
        out = []
        for p, pl, (text,) in zip(problems, plans, replies):
            r = self._rationale(text, p, "ers", (p.id, pl.id))
            if r is not None:
                out.append(r)
        return out

    @batched("problems")
    def solutions(self, problems: list[Problem], n: int = 1, temperature: float | None = None) -> list[Rationale]:
        """``n`` solutions per problem written as a student is asked to (``student_solve``): the teacher's own
        samples, for SFT on them (off-policy distillation). Unparsable ones are noted and skipped."""
        prompts = [solve_prompt(p, "", self.config.system_prompt) for p in problems]
        outs = self.generate(prompts, self.params(n=n, temperature=temperature, stop_after="####"))
        out = []
        for p, cs in zip(problems, outs):
            for c in cs:
                r = self._rationale(c.text, p, "teacher", (p.id,))
                if r is not None:
                    out.append(r)
        return out

    @batched("problems")
    def explain(self, problems: list[Problem], n: int = 1, temperature: float | None = None,
                max_tokens: int | None = None) -> list[Explanation]:
        """``n`` explanations per problem of how to reach its gold solution (``teacher_explain``: the teacher sees
        the question and the solution), with their sampled token ids and log-probabilities (problem-major)."""
        prompts = [explain_prompt(p, self.config.system_prompt) for p in problems]
        outs = self.generate(prompts, self.params(n=n, temperature=temperature, max_tokens=max_tokens))
        return [Explanation(problem_id=p.problem_id, text=c.text, model=self.engine.model, adapter=self.engine.adapter,
                            sample=i, tokens=c.completion_tokens, token_ids=c.token_ids, logprobs=rounded(c.logprobs),
                            sender=self.name, parents=(p.id,)) for p, cs in zip(problems, outs) for i, c in enumerate(cs)]

    @batched("attempts")
    def logprobs(self, attempts: list[Attempt], problems: list[Problem],
                 context: Literal["question", "solution"] = "question") -> list[TokenScores]:
        """The teacher's log-probability (temperature 1) of each token the student sampled in each attempt: exactly
        its ``token_ids``, after the student's own prompt and prefix (``context="question"``) or after a prompt that
        also holds the gold solution (``"solution"``: privileged information). One TokenScores per attempt."""
        by_id = {p.problem_id: p for p in problems}
        for model in sorted({a.model for a in attempts}):
            self.same_tokenizer(model, "student")
        missing = [a for a in attempts if a.token_ids is None]
        if missing:
            raise ValueError(f"attempt {missing[0].id} of {missing[0].problem_id} has no token ids (its student's "
                             "engine gives none): scoring a student's tokens needs an hf or vllm student")
        prompts = [score_prompt(by_id[a.problem_id], a.prefix, context, self.config.system_prompt) for a in attempts]
        scores = self.engine.score(prompts, [a.token_ids for a in attempts])
        return [TokenScores(problem_id=a.problem_id, attempt_id=a.id, logprobs=tuple(round(x, 4) for x in lp),
                            model=self.engine.model, adapter=self.engine.adapter, context=context, sender=self.name,
                            parents=(a.id,)) for a, lp in zip(attempts, scores)]
