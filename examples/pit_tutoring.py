"""Pit tutoring: step in where the student first goes wrong, or at the start? (first-step paper's open question)

The student solves; on each wrong attempt its first pit is located (the first step whose result is not one of
the gold solution's numbers, or the Explorer's rollouts); a tutor writes one step for each wrong problem: the
step at the pit after the student's own steps before it (at_pit), or the first steps of the solution (first_step,
the first-step paper's guidance), as many as spend the same tokens as the at_pit step on that problem (equal
teacher tokens up to one step; the report gives both). The student retries from each.
"""

from __future__ import annotations

import msgspec

from schoolroom.api import (Attempt, Classroom, Guidance, Problem, Report, StepRewards, Table, Teacher, batched,
                            compare, departs_from_gold, message, protocol, role, solve_prompt)


@message
class TutorStep(Guidance, frozen=True, kw_only=True, tag="tutor_step"):
    """Guidance of the student's own steps before the pit and the tutor's step; ``tokens``: what the step cost."""

    tokens: int = 0


@role("tutor")
class Tutor(Teacher):
    @batched("problems", "prefixes")
    def next_step(self, problems: list[Problem], prefixes: list[list[str]], max_tokens: int = 48) -> list[TutorStep]:
        """The next step of each solution after ``prefixes[i]`` (the student's steps; [] for the first step)."""
        prompts = [solve_prompt(p, "".join(s + "\n" for s in pre), self.config.system_prompt)
                   for p, pre in zip(problems, prefixes)]
        outs = self.generate(prompts, self.params(n=1, max_tokens=max_tokens, stop=("\n",)))
        return [TutorStep(problem_id=p.problem_id, kind="pit", k=len(pre) + 1, steps=(*pre, c.text.strip()),
                          teacher=self.name, tokens=c.completion_tokens, sender=self.name, parents=(p.id,))
                for p, pre, (c,) in zip(problems, prefixes, outs)]


class PitSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    problems: str = "eval"
    tutor: str = "tutor"
    locate: str = "gold"  # gold: first step whose result is not a gold number | explorer: first pit by rollouts
    step_tokens: int = 48  # the cap on a tutor step, the same in both arms
    max_steps: int = 4  # first_step: at most this many steps to reach the at_pit arm's tokens
    seed: int = 0


def gold_pit(problem: Problem, attempt: Attempt) -> int:
    """The first step whose result is not a gold number (``departs_from_gold``), else the last step."""
    pit = departs_from_gold(problem, attempt.steps)
    return pit if pit is not None else max(0, len(attempt.steps) - 1)


@protocol("pit_tutoring", PitSettings)
def pit_tutoring(room: Classroom, cfg: PitSettings) -> Report:
    problems = room.problems(cfg.problems)
    attempts = room.student.solve(problems)
    verdicts = room.verifier.check(attempts, problems)
    wrong = [(p, a) for p, a, v in zip(problems, attempts, verdicts) if not v.correct]
    todo = [p for p, _ in wrong]
    if cfg.locate == "explorer":
        rewards = [m for m in room.explorer.explore([a for _, a in wrong], todo) if isinstance(m, StepRewards)]
        pits = [r.first_pit if r.first_pit is not None else gold_pit(p, a) for r, (p, a) in zip(rewards, wrong)]
    else:
        pits = [gold_pit(p, a) for p, a in wrong]
    tutor = room.agent(cfg.tutor, Tutor)
    at_pit = tutor.next_step(todo, [list(a.steps[:pit]) for (_, a), pit in zip(wrong, pits)], cfg.step_tokens)
    first, spent = {}, [0] * len(todo)
    for _ in range(cfg.max_steps):  # first steps, one at a time, until each problem spent its at_pit step's tokens
        short = [i for i, s in enumerate(at_pit) if i not in first or spent[i] < s.tokens]
        more = tutor.next_step([todo[i] for i in short], [list(first[i].steps) if i in first else [] for i in short],
                               cfg.step_tokens) if short else []
        for i, step in zip(short, more):
            first[i], spent[i] = step, spent[i] + step.tokens
    results = {arm: room.verifier.check(room.student.solve(todo, guidance), todo)  # compare() logs each arm
               for arm, guidance in (("first_step", [first[i] for i in range(len(todo))]), ("at_pit", at_pit))}
    tokens = {"first_step": sum(spent), "at_pit": sum(s.tokens for s in at_pit)}
    table, metrics, fig = compare(results, "first_step", seed=cfg.seed, header="the tutor's step",
                                  title=f"Retried accuracy on the {len(wrong)} problems first answered wrong")
    spread = [sum(p == i for p in pits) for i in range(max(pits, default=-1) + 1)]
    return Report(
        title=f"Pit tutoring: {room.config.run.name}",
        lines=[f"{len(problems)} problems; the student answered {len(problems) - len(wrong)} right and "
               f"{len(wrong)} wrong at first. Pits located by {cfg.locate}; tutor `{cfg.tutor}` "
               f"({room.describe(cfg.tutor)}). at_pit: the student's steps before its pit and one tutor step; first_step: "
               f"the tutor's first steps, as many as it takes to spend the at_pit step's tokens on that problem (at most "
               f"{cfg.max_steps}; equal tokens up to one step). Steps of at most {cfg.step_tokens} tokens."],
        tables=[table, Table("Teacher tokens per arm", ["arm", "tutor completion tokens"], list(tokens.items())),
                Table("Where the pits were", ["first pit at step"] + [str(i + 1) for i in range(len(spread))],
                      [["attempts"] + spread])],
        figures=[fig], metrics={"accuracy": metrics, "tutor_tokens": tokens, "pits": pits,
                                "first_try": {"correct": len(problems) - len(wrong), "n": len(problems)}})
