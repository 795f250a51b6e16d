"""Training kinds of the reinforcement half: reward models (``orm``, ``prm``) and RL (``ppo``, ``grpo``).

Each renders messages into examples and calls ``schoolroom.training``:

- ``orm``: attempts and their Verdicts; label 1 for a correct attempt, 0 for a wrong one.
- ``prm``: attempts and their StepRewards (the Explorer's Monte-Carlo labels, or human labels such as
  PRM800K's); a rollout label is ``hard`` (1 if any rollout from the prefix reached the answer) or ``soft``
  (the fraction that did) by the ``labels`` setting; a step no one measured stays unlabelled. An attempt
  judged correct with no StepRewards has every step labelled 1: the attempt itself reached the answer.
- ``ppo``, ``grpo``: the rollouts (attempts, or a teacher's Explanations: trained as written after the teacher's
  ``teacher_explain`` prompt) with one StepRewards each, as the token ids the engine sampled
  (text tokenized again, with a Note, for an engine that gives none). An ORM score or the answer check is
  the reward; PRM or rollout step scores become one by ``aggregate`` (min | max | avg | prod | last), or,
  for PPO with ``step_rewards``, each step's score is placed at the token that ends the step.
- ``opd`` (on-policy distillation): the rollouts with the teacher's TokenScores each, and with ``task_coef`` > 0
  one StepRewards each too (the task reward); without, every reward is 0 and only the teacher's grades teach.
"""

from __future__ import annotations

from schoolroom.agents.verifier import reward_input
from schoolroom.messages import (Attempt, Explanation, Message, Problem, StepRewards, TokenScores, TrainRequest,
                                 Verdict)
from schoolroom.training.aggregate import aggregate
from schoolroom.training.kinds import Trainee, training_kind
from schoolroom.training.rl import Rollout
from schoolroom.training.settings import OPDConfig, RewardModelConfig, RLConfig


def step_label(value: float | None, mode: str, source: str) -> float | None:
    if value is None or source != "rollouts":
        return value
    if mode not in ("hard", "soft"):
        raise ValueError(f"PRM labels are hard or soft, not {mode!r}")
    return value if mode == "soft" else float(value > 0)


def reward_model_examples(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem]
                          ) -> list[dict]:
    tok = t.tokenizer_for(request.base_model)
    correct = {v.attempt_id: v.correct for v in data if isinstance(v, Verdict)}
    labels = {r.attempt_id: r for r in data if isinstance(r, StepRewards)}
    mode = RewardModelConfig.of(request.hyper)["labels"]
    out = []
    for a in (m for m in data if isinstance(m, Attempt)):
        x = reward_input(tok, problems[a.problem_id], a)
        if request.kind == "orm":
            if a.id not in correct:
                continue
            x["labels"] = [float(correct[a.id])]
        elif a.id in labels:
            x["labels"] = [step_label(v, mode, labels[a.id].source) for v in labels[a.id].rewards]
            if x["labels"] and x["labels"][-1] is None and correct.get(a.id) is False:
                x["labels"][-1] = 0.0  # the last step was not rolled out from; the answer check graded it wrong
        elif correct.get(a.id):
            x["labels"] = [1.0] * len(a.steps)
        else:
            continue
        out.append(x)
    return out


@training_kind("prm")
@training_kind("orm")
def reward_model(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem],
                 out: str) -> dict:
    from schoolroom.training.reward_model import train_reward_model

    examples = reward_model_examples(t, request, data, problems)
    return train_reward_model(t.model_path(request), examples, out, request.kind, base_model=request.base_model
                              or t.config.model, **t.fit_args(request))


def step_ends(a: Attempt, scores: tuple[float | None, ...]) -> list[tuple[int, float]]:
    """(character offset in the attempt's own text where step i ends, its score) for the scored steps it wrote
    (not those of a given prefix)."""
    full, cursor, out = a.prefix + a.text, 0, []
    for step, s in zip(a.steps, scores):
        i = full.find(step, cursor)
        if i < 0:
            continue
        cursor = i + len(step)
        if s is not None and cursor > len(a.prefix):
            out.append((cursor - len(a.prefix), float(s)))
    return out


def rollouts(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem],
             rewarded: bool = True) -> list[Rollout]:
    """Each attempt as a rollout in text with its reward (see ``schoolroom.training.rl``); ``rewarded=False``:
    the reward is 0 where an attempt has no StepRewards."""
    h = RLConfig.of({k: v for k, v in request.hyper.items() if k in RLConfig.__struct_fields__})
    how, per_step, empty = h["aggregate"], h["step_rewards"], h["empty_reward"]
    rewards: dict[str, StepRewards] = {}
    for m in data:
        if isinstance(m, StepRewards):
            if m.attempt_id in rewards:
                raise ValueError(f"attempt {m.attempt_id} has two StepRewards: train on one scorer's rewards")
            rewards[m.attempt_id] = m
    out = []
    for a in (m for m in data if isinstance(m, (Attempt, Explanation))):
        r = rewards.get(a.id)
        if r is None and rewarded:
            raise ValueError(f"attempt {a.id} has no StepRewards: score the rollouts before training on them")
        score = 0.0 if r is None else r.score if r.score is not None else aggregate(r.rewards, how)
        prompt = (t.prompt_text(problems[a.problem_id], a.prefix) if isinstance(a, Attempt)
                  else t.explain_text(problems[a.problem_id]))
        out.append(Rollout(prompt=prompt, completion=a.text,
                           completion_ids=list(a.token_ids) if a.token_ids is not None else None,
                           logprobs=list(a.logprobs) if a.logprobs is not None else None,
                           reward=empty if score is None else score, group=a.problem_id,
                           step_rewards=step_ends(a, r.rewards) if r and per_step and r.score is None and isinstance(a, Attempt)
                           else []))
    text_only = [x for x in out if x.completion_ids is None]
    if text_only:
        t.note("retokenized", f"{len(text_only)} of {len(out)} rollouts carry no sampled token ids (their engine gives "
               "none): they are trained on their text tokenized again, and the stop token is not an action for them",
               rollouts=len(text_only))
    return out


@training_kind("ppo")
def ppo(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.ppo import train_ppo

    return train_ppo(t.model_path(request), rollouts(t, request, data, problems), out,
                     reference_adapter=t.adapter_path(request.reference_adapter), **t.fit_args(request))


@training_kind("grpo")
def grpo(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.grpo import train_grpo

    return train_grpo(t.model_path(request), rollouts(t, request, data, problems), out,
                      reference_adapter=t.adapter_path(request.reference_adapter), **t.fit_args(request))


@training_kind("opd")
def opd(t: Trainee, request: TrainRequest, data: list[Message], problems: dict[str, Problem], out: str) -> dict:
    from schoolroom.training.opd import train_opd

    h = OPDConfig.of({k: v for k, v in request.hyper.items() if k in OPDConfig.__struct_fields__})
    scores = {m.attempt_id: m for m in data if isinstance(m, TokenScores)}
    attempts = [m for m in data if isinstance(m, Attempt)]
    out_rollouts = rollouts(t, request, data, problems, rewarded=bool(h["task_coef"]))
    for a, x in zip(attempts, out_rollouts):
        s = scores.get(a.id)
        if s is None or a.token_ids is None or len(s.logprobs) != len(a.token_ids):
            raise ValueError(f"attempt {a.id} has no teacher TokenScores of its {a.tokens} sampled tokens: the "
                             "teacher scores the rollouts (teacher.logprobs) before training on them")
        x.teacher_logprobs = list(s.logprobs)
    return train_opd(t.model_path(request), out_rollouts, out,
                     reference_adapter=t.adapter_path(request.reference_adapter), **t.fit_args(request))
