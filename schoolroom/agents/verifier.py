"""The Verifier: grades attempts against the gold answer (no model)."""

from __future__ import annotations

from schoolroom.agents.base import Agent
from schoolroom.environment import answers_match
from schoolroom.messages import Attempt, Mistake, Problem, Verdict


class Verifier(Agent):
    role = "verifier"
    uses_engine = False

    def check(self, attempts: Attempt | list[Attempt], problems: Problem | list[Problem]) -> Verdict | list[Verdict]:
        """One Verdict per attempt; ``problems`` is aligned with ``attempts`` or a pool to look them up in."""
        single = isinstance(attempts, Attempt)
        batch = [attempts] if single else list(attempts)
        pool = [problems] if isinstance(problems, Problem) else list(problems)
        by_id = {p.problem_id: p for p in pool}
        verdicts = []
        for a in batch:
            p = by_id.get(a.problem_id)
            if p is None:
                raise KeyError(f"no problem {a.problem_id} for attempt {a.id}")
            verdicts.append(Verdict(problem_id=a.problem_id, attempt_id=a.id, correct=answers_match(a.answer, p.answer),
                                    predicted=a.answer, gold=p.answer, sender=self.name, parents=(a.id, p.id)))
        return verdicts[0] if single else verdicts

    def mistakes(self, attempts: list[Attempt], verdicts: list[Verdict]) -> list[Mistake]:
        """The wrong attempts, as Mistakes."""
        by_attempt = {a.id: a for a in attempts}
        return [Mistake(problem_id=v.problem_id, attempt_id=v.attempt_id, text=by_attempt[v.attempt_id].prefix + by_attempt[v.attempt_id].text,
                        predicted=v.predicted, gold=v.gold, sender=self.name, parents=(v.attempt_id, v.id))
                for v in verdicts if not v.correct]
