"""The Verifier: grades attempts against the gold answer, and scores them with a reward model.

``check`` compares final answers (no model). ``score`` writes one ``StepRewards`` per attempt with a
scorer: ``answer`` (the answer check as a score, 1 or 0), or the reward model this verifier loaded with
``load`` (an ORM: one score per attempt; a PRM: one per step), which runs here, on this agent's own actor
and resources, on the backbone its config names. A new scorer is a function and a registration::

    @scorer("length")
    def length(verifier, attempts, problems): return [StepRewards(...), ...]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schoolroom.agents.base import Agent, batched, effect, role
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import solve_prompt
from schoolroom.environment import answers_match
from schoolroom.messages import Attempt, Mistake, Problem, Rationale, StepRewards, TrainResult, Verdict
from schoolroom.registry import Registry

SCORERS: Registry[Callable[..., list[StepRewards]]] = Registry("scorer")


def scorer(name: str):
    """Register ``fn(verifier, attempts, problems) -> [StepRewards]`` (one per attempt, in order) as scorer ``name``."""

    def register(fn):
        return SCORERS.register(name, fn)

    return register


def reward_input(tokenizer, problem: Problem, attempt: Attempt) -> dict[str, Any]:
    """What a reward model reads of an attempt (trained on and scored the same way): the question as the student
    is asked it, then the solution as text (ORM) and as steps (PRM)."""
    return {"prompt": render_prompt(tokenizer, solve_prompt(problem)), "text": attempt.prefix + attempt.text,
            "steps": list(attempt.steps)}


@role("verifier")
class Verifier(Agent):
    uses_engine = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reward_model: Any = None  # (model, tokenizer, kind, separator, version) once load() was called

    @batched("attempts")
    def check(self, attempts: Attempt | Rationale | list[Attempt | Rationale],
              problems: Problem | list[Problem]) -> Verdict | list[Verdict]:
        """One Verdict per attempt or rationale (its ``attempt_id`` names what was judged, ``reason`` why it
        is wrong); ``problems`` is a pool to look the problems up in."""
        single = isinstance(attempts, (Attempt, Rationale))
        batch = [attempts] if single else list(attempts)
        by_id = _pool(problems)
        verdicts = []
        for a in batch:
            p = _problem(by_id, a)
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

    @effect
    def load(self, result: TrainResult | None) -> str | None:
        """Score with the reward model of ``result`` (trained with kind orm or prm) from now on; None: drop it."""
        if result is None:
            self.reward_model = None
            return None
        if result.failed:
            raise ValueError(f"verifier {self.name}: no reward model to load: {result.failed}")
        from schoolroom import models
        from schoolroom.training.reward_model import load_reward_model, read_info, separator

        info = read_info(result.path)
        if info.get("base_model") and info["base_model"] != self.config.model:
            raise ValueError(f"verifier {self.name}: the reward model {result.adapter} was trained on "
                             f"{info['base_model']!r}, this verifier runs {self.config.model!r}")
        tokenizer = models.load_tokenizer(self.config.model)
        model = load_reward_model(models.resolve(self.config.model).path, self.config.device, adapter=result.path,
                                  pad_token_id=tokenizer.pad_token_id).eval()
        self.reward_model = (model, tokenizer, info["kind"], separator(tokenizer, info["separator"]), result.adapter)
        return result.adapter

    @batched("attempts")
    def score(self, attempts: list[Attempt], problems: list[Problem], scorer: str | None = None) -> list[StepRewards]:
        """One StepRewards per attempt, by ``scorer`` (default: the loaded reward model, orm or prm)."""
        if scorer is None:
            if self.reward_model is None:
                raise ValueError(f"verifier {self.name} has no reward model loaded: load one trained with kind orm "
                                 "or prm, or name a scorer (scorer='answer')")
            scorer = self.reward_model[2]
        if scorer not in SCORERS:
            raise ValueError(SCORERS.unknown(scorer))
        return SCORERS[scorer](self, list(attempts), list(problems))


def _pool(problems: Problem | list[Problem]) -> dict[str, Problem]:
    return {p.problem_id: p for p in ([problems] if isinstance(problems, Problem) else problems)}


def _problem(by_id: dict[str, Problem], a: Attempt | Rationale) -> Problem:
    if a.problem_id not in by_id:
        raise KeyError(f"no problem {a.problem_id} for attempt {a.id}")
    return by_id[a.problem_id]


@scorer("answer")
def answer_score(v: Verifier, attempts: list[Attempt], problems: list[Problem]) -> list[StepRewards]:
    """The answer check as a reward: 1.0 for the gold answer, 0.0 otherwise."""
    return [StepRewards(problem_id=a.problem_id, attempt_id=a.id, source="answer",
                        score=float(answers_match(a.answer, p.answer)), sender=v.name, parents=(a.id, p.id))
            for a, p in _with_problems(attempts, problems)]


def _with_problems(attempts: list[Attempt], problems: list[Problem]) -> list[tuple[Attempt, Problem]]:
    by_id = _pool(problems)
    return [(a, _problem(by_id, a)) for a in attempts]


def _model_scores(v: Verifier, kind: str, attempts: list[Attempt], problems: list[Problem]
                  ) -> list[tuple[Attempt, Problem, list[float]]]:
    """Each attempt, its problem, and the loaded reward model's scores of it (one; or one per step it reached)."""
    from schoolroom.training.reward_model import score

    if v.reward_model is None or v.reward_model[2] != kind:
        have = "none" if v.reward_model is None else f"a {v.reward_model[2].upper()}"
        raise ValueError(f"verifier {v.name} cannot score with an {kind.upper()}: it has {have} loaded")
    model, tokenizer, _, sep, _ = v.reward_model
    pairs = _with_problems(attempts, problems)
    examples = [reward_input(tokenizer, p, a) for a, p in pairs]
    scores = score(model, tokenizer, examples, kind, sep, batch_size=v.config.batch_size,
                   max_length=v.config.max_model_len)
    return [(a, p, s) for (a, p), s in zip(pairs, scores)]


@scorer("orm")
def orm_score(v: Verifier, attempts: list[Attempt], problems: list[Problem]) -> list[StepRewards]:
    """The outcome reward model's probability that the attempt is correct."""
    return [StepRewards(problem_id=a.problem_id, attempt_id=a.id, source="orm", score=s[0] if s else None,
                        adapter=v.reward_model[4], sender=v.name, parents=(a.id, p.id))
            for a, p, s in _model_scores(v, "orm", attempts, problems)]


@scorer("prm")
def prm_score(v: Verifier, attempts: list[Attempt], problems: list[Problem]) -> list[StepRewards]:
    """The process reward model's probability, after each step, that the solution is still correct."""
    return [StepRewards(problem_id=a.problem_id, attempt_id=a.id, source="prm",
                        rewards=tuple(s) + (None,) * (len(a.steps) - len(s)), adapter=v.reward_model[4],
                        sender=v.name, parents=(a.id, p.id))
            for a, p, s in _model_scores(v, "prm", attempts, problems)]
