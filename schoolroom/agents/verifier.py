"""The Verifier: grades attempts and written rationales against the gold answer (no model)."""

from __future__ import annotations

from schoolroom.agents.base import Agent, batched
from schoolroom.environment import answers_match
from schoolroom.messages import Attempt, Mistake, Problem, Rationale, Verdict


class Verifier(Agent):
    role = "verifier"
    uses_engine = False

    @batched("attempts")
    def check(self, attempts: Attempt | Rationale | list[Attempt | Rationale],
              problems: Problem | list[Problem]) -> Verdict | list[Verdict]:
        """One Verdict per attempt or rationale (its ``attempt_id`` names what was judged, ``reason`` why it
        is wrong); ``problems`` is a pool to look the problems up in."""
        single = isinstance(attempts, (Attempt, Rationale))
        batch = [attempts] if single else list(attempts)
        pool = [problems] if isinstance(problems, Problem) else list(problems)
        by_id = {p.problem_id: p for p in pool}
        verdicts = []
        for a in batch:
            p = by_id.get(a.problem_id)
            if p is None:
                raise KeyError(f"no problem {a.problem_id} for attempt {a.id}")
            ok = answers_match(a.answer, p.answer)
            reason = "" if ok else ("no final answer" if a.answer is None else "wrong final answer")
            verdicts.append(Verdict(problem_id=a.problem_id, attempt_id=a.id, correct=ok, predicted=a.answer,
                                    gold=p.answer, reason=reason, sender=self.name, parents=(a.id, p.id)))
        return verdicts[0] if single else verdicts

    def mistakes(self, attempts: list[Attempt], verdicts: list[Verdict]) -> list[Mistake]:
        """The wrong attempts, as Mistakes."""
        by_attempt = {a.id: a for a in attempts}
        return [Mistake(problem_id=v.problem_id, attempt_id=v.attempt_id, text=by_attempt[v.attempt_id].prefix + by_attempt[v.attempt_id].text,
                        predicted=v.predicted, gold=v.gold, sender=self.name, parents=(v.attempt_id, v.id))
                for v in verdicts if not v.correct]
