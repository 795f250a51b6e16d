"""Training kinds of the teaching half: ``sft`` on rationales, ``reflection`` (rationales against the mistakes
they answer), ``dpo`` on preference pairs. Each renders messages into the text the student sees and calls
``schoolroom.training``."""

from __future__ import annotations

import random

from schoolroom.messages import Message, Mistake, PreferencePair, Problem, Rationale, TrainRequest
from schoolroom.training.kinds import Trainee, training_kind


def sft_examples(t: Trainee, data: list[Message], problems: dict[str, Problem]) -> list[dict]:
    return [{"prompt": t.prompt_text(problems[r.problem_id]), "completion": r.text}
            for r in data if isinstance(r, Rationale)]


def reflection_examples(t: Trainee, data: list[Message], problems: dict[str, Problem], seed: int = 0) -> list[dict]:
    """Correct rationales, each against the wrong solution it answers (the negative) and with another correct
    rationale of the same question picked at random (the positive, as the authors' collator; "" if none)."""
    wrong = {m.id: m.text for m in data if isinstance(m, Mistake)}
    rationales = [r for r in data if isinstance(r, Rationale)]
    texts: dict[str, list[str]] = {}
    for r in rationales:
        texts.setdefault(r.problem_id, []).append(r.text)
    rng = random.Random(seed)
    out = []
    for r in rationales:
        others = [x for x in texts[r.problem_id] if x != r.text]
        out.append({"prompt": t.prompt_text(problems[r.problem_id]), "completion": r.text,
                    "negative": wrong.get(r.mistake_id or "", ""), "positive": rng.choice(others) if others else ""})
    return out


def dpo_examples(t: Trainee, data: list[Message], problems: dict[str, Problem]) -> list[dict]:
    return [{"prompt": t.prompt_text(problems[x.problem_id], x.prefix), "chosen": x.chosen, "rejected": x.rejected}
            for x in data if isinstance(x, PreferencePair)]


@training_kind("sft")
def sft(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.sft import train_sft

    return train_sft(t.model_path(request), sft_examples(t, data, problems), out, **t.fit_args(request))


@training_kind("reflection")
def reflection(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.reflection import train_reflection

    return train_reflection(t.model_path(request), reflection_examples(t, data, problems, request.seed), out,
                            **t.fit_args(request))


@training_kind("dpo")
def dpo(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.dpo import train_dpo

    return train_dpo(t.model_path(request), dpo_examples(t, data, problems), out, **t.fit_args(request))


from schoolroom.agents import reinforce_kinds  # noqa: E402,F401  (registers orm, prm, ppo, grpo)
