"""Reward models and RL updates on the real model with real training steps, inline (no Ray).

One ORM step and one PRM step raise the scores of their positive labels over their negatives on their own
training data; one PPO and one GRPO step raise the log-probability of the rewarded completion over the
unrewarded one. The trained folders load in plain transformers + peft."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from schoolroom import models
from schoolroom.agents.trainer import TRAINING_KINDS, Trainer, training_kind
from schoolroom.agents.verifier import SCORERS, Verifier, reward_input, scorer
from schoolroom.config import AgentConfig
from schoolroom.environment import solution_text, synthetic
from schoolroom.messages import Attempt, StepRewards, TrainRequest, TrainResult, Verdict, new_id
from schoolroom.training.logprobs import completion_logprob

pytestmark = pytest.mark.slow

PROBLEMS = synthetic(8, steps=2, seed=3)


def wrong(p) -> tuple[str, ...]:
    """The gold steps with the second one's result off by 7 (and the answer with it)."""
    bad = str(int(p.answer) + 7)
    return (p.gold_steps[0], p.gold_steps[1].replace(f"= {p.answer}", f"= {bad}"), f"#### {bad}")


GOOD = [Attempt(problem_id=p.problem_id, text=solution_text(p.gold_steps, p.answer),
                steps=p.gold_steps + (f"#### {p.answer}",), answer=p.answer) for p in PROBLEMS]
BAD = [Attempt(problem_id=p.problem_id, text="\n".join(wrong(p)), steps=wrong(p), answer=wrong(p)[-1][5:])
       for p in PROBLEMS]
ATTEMPTS = GOOD + BAD
VERDICTS = [Verdict(problem_id=a.problem_id, attempt_id=a.id, correct=a in GOOD) for a in ATTEMPTS]
LABELS = [StepRewards(problem_id=a.problem_id, attempt_id=a.id, source="human",
                      rewards=(1.0, 1.0, 1.0) if a in GOOD else (1.0, 0.0, 0.0)) for a in ATTEMPTS]


def margin(kind: str, scores: list[list[float]]) -> float:
    """Mean score of positively labelled positions minus mean score of negative ones."""
    labels = [[1.0 if a in GOOD else 0.0] for a in ATTEMPTS] if kind == "orm" else [list(r.rewards) for r in LABELS]
    pos = [s for ss, ys in zip(scores, labels) for s, y in zip(ss, ys) if y == 1.0]
    neg = [s for ss, ys in zip(scores, labels) for s, y in zip(ss, ys) if y == 0.0]
    return sum(pos) / len(pos) - sum(neg) / len(neg)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return Trainer("trainer", AgentConfig(role="trainer"), workdir=str(tmp_path_factory.mktemp("run")))


@pytest.mark.parametrize("kind", ["orm", "prm"])
def test_one_reward_model_step_separates_its_labels(kind, trainer):
    from transformers import set_seed

    from schoolroom.training.reward_model import load_reward_model, score, separator

    tok = trainer.tokenizer
    set_seed(0)  # the same initial head as the training run below draws
    fresh = load_reward_model(models.resolve("smollm2-135m-instruct").path, pad_token_id=tok.pad_token_id).eval()
    examples = [reward_input(tok, PROBLEMS[i % 8], a) for i, a in enumerate(ATTEMPTS)]
    before = margin(kind, score(fresh, tok, examples, kind, separator(tok)))

    data = ATTEMPTS + (VERDICTS if kind == "orm" else LABELS)
    request = TrainRequest(kind=kind, name=kind, data=tuple(m.id for m in data), base_model="smollm2-135m-instruct",
                           hyper={"max_steps": 1, "batch_size": 16, "learning_rate": 2e-3})
    result = trainer.train(request, data, PROBLEMS)
    assert result.metrics["steps"] == 1 and result.metrics["labels"] == (16 if kind == "orm" else 48)
    verifier = Verifier(kind, AgentConfig(role="verifier"))
    assert verifier.load(result) == result.adapter
    rewards = verifier.score(ATTEMPTS, PROBLEMS)
    assert all(r.source == kind and r.adapter == result.adapter for r in rewards)
    scores = [[r.score] for r in rewards] if kind == "orm" else [list(r.rewards) for r in rewards]
    assert all(len(s) == (1 if kind == "orm" else len(a.steps)) for s, a in zip(scores, ATTEMPTS))
    after = margin(kind, scores)
    assert after > before, (before, after)


def test_a_verifier_without_a_reward_model_says_so():
    v = Verifier("verifier", AgentConfig(role="verifier"))
    with pytest.raises(ValueError, match="no reward model loaded.*scorer='answer'"):
        v.score(GOOD[:1], PROBLEMS)
    (r,) = v.score(GOOD[:1], PROBLEMS, scorer="answer")
    assert r.source == "answer" and r.score == 1.0 and r.rewards == ()
    assert [x.score for x in v.score(BAD[:2], PROBLEMS, scorer="answer")] == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown scorer 'length'"):
        v.score(GOOD[:1], PROBLEMS, scorer="length")


def test_a_new_scorer_and_training_kind_are_a_function_and_a_registration(tmp_path):
    @scorer("length")
    def length(v, attempts, problems):
        return [StepRewards(problem_id=a.problem_id, attempt_id=a.id, source="length", score=float(len(a.text)))
                for a in attempts]

    @training_kind("count")
    def count(t, request, data, problems, out):
        return {"messages": float(len(data))}

    try:
        (r,) = Verifier("v", AgentConfig(role="verifier")).score(GOOD[:1], PROBLEMS, scorer="length")
        assert r.score == len(GOOD[0].text)
        t = Trainer("t", AgentConfig(role="trainer"), workdir=str(tmp_path))
        assert t.train(TrainRequest(kind="count"), GOOD, PROBLEMS).metrics == {"messages": 8.0}
    finally:
        SCORERS.pop("length"), TRAINING_KINDS.pop("count")
    with pytest.raises(ValueError, match="unknown training kind 'count'; known: sft, reflection, dpo, orm, prm, ppo, grpo"):
        t.train(TrainRequest(kind="count"), GOOD, PROBLEMS)


def test_a_reward_model_for_another_backbone_is_refused(trainer, tmp_path):
    data = ATTEMPTS + VERDICTS
    request = TrainRequest(kind="orm", data=tuple(m.id for m in data), hyper={"max_steps": 1, "batch_size": 16})
    result = trainer.train(request, data, PROBLEMS)
    other = Verifier("orm", AgentConfig(role="verifier", model=str(tmp_path)))
    with pytest.raises(ValueError, match="trained on 'smollm2-135m-instruct', this verifier runs"):
        other.load(result)


@pytest.mark.parametrize("kind", ["ppo", "grpo"])
def test_one_rl_step_raises_the_rewarded_completion(kind, trainer):
    """Each problem's correct and wrong solution as rollouts (two of each, one group), rewarded 1 and 0 by the
    answer check: one update makes the correct one likelier relative to the wrong one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    problems = PROBLEMS[:2]
    rollouts = [replace(a, id=new_id(), sample=i) for i in range(2)
                for p in problems for a in GOOD + BAD if a.problem_id == p.problem_id]
    rewards = Verifier("v", AgentConfig(role="verifier")).score(rollouts, problems, scorer="answer")
    request = TrainRequest(kind=kind, name=kind, data=tuple(m.id for m in rollouts + rewards),
                           hyper={"max_steps": 1, "batch_size": 8, "learning_rate": 1e-3})
    result = trainer.train(request, rollouts + rewards, problems)
    assert isinstance(result, TrainResult) and result.metrics["reward_mean"] == 0.5
    assert result.metrics["rollouts"] == 8 and result.metrics["steps"] == 1

    path = models.resolve("smollm2-135m-instruct").path
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = trainer.tokenizer

    def gap(model) -> float:
        return sum(completion_logprob(model, tok, trainer.prompt_text(p), g.text) -
                   completion_logprob(model, tok, trainer.prompt_text(p), b.text)
                   for p, g, b in zip(problems, GOOD, BAD))

    before = gap(base)
    after = gap(PeftModel.from_pretrained(base, result.path).eval())
    assert after > before, (before, after)


def test_step_scores_land_on_the_tokens_that_end_their_steps(trainer):
    from schoolroom.agents.reinforce_kinds import rollouts
    from schoolroom.training.rl import encode_rollouts

    p = PROBLEMS[0]
    a = GOOD[0]
    prm = StepRewards(problem_id=p.problem_id, attempt_id=a.id, source="prm", rewards=(0.9, 0.2, 0.7))
    per_step = TrainRequest(kind="ppo", hyper={"step_rewards": True})
    (x,) = rollouts(trainer, per_step, [a, prm], {p.problem_id: p})
    assert x["reward"] == pytest.approx(0.2) and x["group"] == p.problem_id  # min, the default aggregation
    ends = [e for e, _ in x["step_rewards"]]
    assert [a.text[:e].endswith(s) for e, s in zip(ends, a.steps)] == [True] * 3 and ends[-1] == len(a.text)
    tok = trainer.tokenizer
    (row,) = encode_rollouts(tok, [x], max_length=512)
    assert sorted(row["rewards"].values()) == pytest.approx([0.2, 0.7, 0.9])
    for k, (step, value) in zip(sorted(row["rewards"]), zip(a.steps, (0.9, 0.2, 0.7))):
        written = tok.decode(row["ids"][row["start"]: row["start"] + k + 1])
        assert written.rstrip().endswith(step) and row["rewards"][k] == pytest.approx(value)
    (last,) = encode_rollouts(tok, rollouts(trainer, TrainRequest(kind="ppo", hyper={"aggregate": "avg"}), [a, prm],
                                            {p.problem_id: p}), max_length=512)
    assert last["rewards"] == {last["actions"] - 1: pytest.approx(0.6)}  # one aggregated reward at the last token
    with pytest.raises(ValueError, match="has two StepRewards"):
        rollouts(trainer, per_step, [a, prm, prm], {p.problem_id: p})
    with pytest.raises(ValueError, match="has no StepRewards"):
        rollouts(trainer, per_step, [a], {p.problem_id: p})
    empty = StepRewards(problem_id=p.problem_id, attempt_id=a.id, source="prm", rewards=())
    (e,) = rollouts(trainer, TrainRequest(kind="ppo", hyper={"empty_reward": -1.0}), [a, empty], {p.problem_id: p})
    assert e["reward"] == -1.0
