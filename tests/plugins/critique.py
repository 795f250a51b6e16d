"""A protocol from outside the package, for the tests: the student solves; a critic (a role declared here, no
model) writes a Critique (a message type declared here) for each wrong attempt; the student tries again with the
critique as its guidance, for a few rounds."""

from __future__ import annotations

import msgspec

from schoolroom.api import (Acc, Agent, Attempt, Classroom, Guidance, Message, Report, Table, Verdict, message,
                            protocol, role)


@message
class Critique(Message, frozen=True, kw_only=True, tag="critique"):
    problem_id: str
    attempt_id: str
    text: str


@role("critic")
class Critic(Agent):
    uses_engine = False

    def critique(self, attempts: list[Attempt], verdicts: list[Verdict], before: list[Critique]) -> list[Critique]:
        """A critique of each wrong attempt; ``before``: the last round's critiques (a wrong answer again says so)."""
        again = {c.problem_id for c in before if isinstance(c, Critique)}
        return [a.reply(Critique, problem_id=a.problem_id, attempt_id=a.id, sender=self.name,
                        text=("Again: " if a.problem_id in again else "") +
                        f"{v.predicted} is not the answer; check each step.")
                for a, v in zip(attempts, verdicts) if not v.correct]


class CritiqueSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    problems: str = "eval"
    rounds: int = 2


@protocol("critique", CritiqueSettings)
def critique(room: Classroom, cfg: CritiqueSettings) -> Report:
    problems = room.problems(cfg.problems)
    critic = room.agent("critic", Critic)
    rows, guidance, critiques = [], None, {}
    for r in room.rounds(cfg.rounds):
        attempts = room.student.solve(problems, guidance)
        verdicts = room.verifier.check(attempts, problems)
        critiques = {c.problem_id: c for c in critic.critique(attempts, verdicts, list(critiques.values()))}
        rows.append([r, Acc(sum(v.correct for v in verdicts), len(verdicts)), len(critiques)])
        guidance = [Guidance(problem_id=p.problem_id, teacher="critic", k=0, steps=(),
                             text=critiques[p.problem_id].text if p.problem_id in critiques else "")
                    for p in problems]
    return Report(title="Critique", lines=[f"{len(problems)} problems, {cfg.rounds} rounds."],
                  tables=[Table("Per round", ["round", "accuracy [95% CI]", "critiques"], rows)],
                  metrics={"rounds": [{"round": r, "critiques": c} for r, _, c in rows]})
