"""The Explorer (Self-Explore): find the first pit of a wrong attempt by rolling out from its step prefixes.

For a wrong attempt with steps s1..sn, k completions are sampled from the prefix s1..st; the
step reward r_t is the fraction that reach the gold answer, and the first pit is the first step
t with r_t = 0 (s1..s_{t-1} could still reach the answer, s1..st cannot). Then a step-level
pair: prompt = the problem + s1..s_{t-1}, rejected = s_t, chosen = a correct completion from
that same prefix. The completer is this agent's engine: the student's model and adapter (the
paper's default) or, by config, a teacher's model (its oracle-completer ablation).

``search = "linear"`` looks at t = 1, 2, ... until the pit (as the paper). ``search = "binary"``
bisects between the question (r_0 > 0) and the wrong final step (r_n = 0): fewer rollouts when
correctness only falls along the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from schoolroom.agents.base import batched
from schoolroom.agents.engines import Completion
from schoolroom.agents.student import Student, solve_prompt
from schoolroom.environment import answers_match, extract_answer
from schoolroom.messages import Attempt, Message, PreferencePair, Problem, StepRewards


def prefix_of(steps: tuple[str, ...], t: int) -> str:
    return "".join(s + "\n" for s in steps[:t])


@dataclass
class _Search:
    attempt: Attempt
    problem: Problem
    how: str
    r: dict[int, float] = field(default_factory=dict)  # prefix length t -> fraction correct
    correct: dict[int, str] = field(default_factory=dict)  # t -> one correct completion from prefix t
    lo: int = 0
    hi: int = 0
    tokens: int = 0
    rollouts: int = 0

    def __post_init__(self):
        self.n = len(self.attempt.steps)
        self.hi = self.n  # the whole wrong attempt: r_n = 0

    def next(self) -> int | None:
        """The prefix length to roll out from next, or None when the pit is known (or unknowable)."""
        if self.n == 0 or self.r.get(0) == 0:
            return None if 0 in self.r else 0
        if 0 not in self.r:
            return 0
        if self.how == "linear":
            t = max(self.r) + 1
            return None if self.r[max(self.r)] == 0 or t >= self.n else t
        if self.hi - self.lo <= 1:
            return None
        return (self.lo + self.hi) // 2

    def observe(self, t: int, completions: list[Completion]) -> None:
        prefix = prefix_of(self.attempt.steps, t)
        ok = [c for c in completions if answers_match(extract_answer(prefix + c.text), self.problem.answer)]
        self.r[t] = len(ok) / len(completions)
        self.tokens += sum(c.completion_tokens for c in completions)
        self.rollouts += len(completions)
        if ok:
            self.correct[t] = ok[0].text
            self.lo = max(self.lo, t)
        elif t > 0:
            self.hi = min(self.hi, t)

    def pit(self) -> int | None:
        """First pit as a prefix length t (1..n): the step s_t; None if even the question alone failed (or the
        attempt has no steps)."""
        if self.n == 0 or not self.r.get(0):
            return None
        if self.how == "linear":
            zeros = [t for t in sorted(self.r) if t > 0 and self.r[t] == 0]
            return zeros[0] if zeros else self.n
        return self.hi

    def messages(self, sender: str) -> list[Message]:
        a, p, t = self.attempt, self.problem, self.pit()
        rewards = tuple(self.r.get(i) for i in range(1, self.n)) + ((0.0,) if self.n else ())
        out: list[Message] = [StepRewards(
            problem_id=p.problem_id, attempt_id=a.id, rewards=rewards, start=self.r.get(0),
            first_pit=None if t is None else t - 1, rollouts=self.rollouts, tokens=self.tokens, search=self.how, source="rollouts",
            sender=sender, parents=(a.id, p.id))]
        if t is not None and (t - 1) in self.correct:
            out.append(PreferencePair(
                problem_id=p.problem_id, prompt=p.question, prefix=prefix_of(a.steps, t - 1),
                chosen=self.correct[t - 1], rejected=a.steps[t - 1], level="step", step=t - 1,
                sender=sender, parents=(a.id, p.id)))
        return out


class Explorer(Student):
    """Rolls out from step prefixes of wrong attempts with its engine (load the student's adapter on it)."""

    role = "explorer"

    @batched("attempts")
    def explore(self, attempts: list[Attempt], problems: list[Problem], k: int = 4, search: str = "linear",
                temperature: float = 0.7, max_tokens: int | None = None) -> list[Message]:
        """StepRewards for every attempt, and a step-level PreferencePair wherever a first pit was found."""
        if search not in ("linear", "binary"):
            raise ValueError(f"search must be linear or binary, not {search!r}")
        by_id = {p.problem_id: p for p in problems}
        searches = [_Search(a, by_id[a.problem_id], search) for a in attempts]
        params = self.params(n=k, temperature=temperature, max_tokens=max_tokens, stop_after="####",
                             seed=self.config.seed)
        step = 0
        while True:
            todo = [(s, t) for s in searches if (t := s.next()) is not None]
            if not todo:
                break
            prompts = [solve_prompt(s.problem, prefix_of(s.attempt.steps, t), self.config.system_prompt)
                       for s, t in todo]
            outs = self.generate(prompts, msgspec.structs.replace(params, seed=params.seed + step))
            for (s, t), cs in zip(todo, outs):
                s.observe(t, cs)
            step += 1
        return [m for s in searches for m in s.messages(self.name)]
