"""Reward models and RL updates on the real model with real training steps, inline (no Ray).

One ORM step and one PRM step raise the scores of their positive labels over their negatives on their own
training data, and lower their loss on the same examples; scoring with shared prefixes computed once gives the
plain batch's numbers; one PPO and one GRPO step raise the log-probability of the rewarded completion over the
unrewarded one. The trained folders load in plain transformers + peft. Plain unit tests: the PRM800K split by
problem, labels counted once, AUCs with their counts and intervals, the held-out check against its baselines, and
best-of-N against a random sample."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from schoolroom import models
from schoolroom.agents.trainer import TRAINING_KINDS, Trainer, training_kind
from schoolroom.agents.verifier import SCORERS, Verifier, reward_input, scorer
from schoolroom.config import AgentConfig
from schoolroom.environment import solution_text, synthetic
from schoolroom.messages import Attempt, Problem, StepRewards, TrainRequest, TrainResult, Verdict, new_id
from schoolroom.training.logprobs import completion_logprob

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


def bce(kind: str, scores: list[list[float]]) -> float:
    """The mean binary cross-entropy of the scores against the labels, a PRM's shared first steps counted once."""
    import math

    if kind == "orm":
        pairs = [(s[0], 1.0 if a in GOOD else 0.0) for s, a in zip(scores, ATTEMPTS)]
    else:
        pairs = [(p, y) for s, a, r in zip(scores, ATTEMPTS, LABELS) for i, (p, y) in enumerate(zip(s, r.rewards))
                 if a in GOOD or i > 0]
    return -sum(y * math.log(p) + (1 - y) * math.log(1 - p) for p, y in pairs) / len(pairs)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return Trainer("trainer", AgentConfig(role="trainer"), workdir=str(tmp_path_factory.mktemp("run")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["orm", "prm"])
def test_one_reward_model_step_separates_its_labels(kind, trainer):
    import torch
    from transformers import set_seed

    from schoolroom.training.reward_model import encode, load_reward_model, score, separator, shared_logits

    tok = trainer.tokenizer
    set_seed(0)  # the same initial head as the training run below draws
    fresh = load_reward_model(models.resolve("smollm2-135m-instruct").path, pad_token_id=tok.pad_token_id).eval()
    examples = [reward_input(tok, PROBLEMS[i % 8], a) for i, a in enumerate(ATTEMPTS)]
    encoded = [encode(tok, x, kind, separator(tok), 1024) for x in examples]
    scores = score(fresh, tok, examples, kind, separator(tok))  # plain padded batches: too little is shared here
    assert [len(s) for s in scores] == [1 if kind == "orm" else len(a.steps) for a in ATTEMPTS]
    flat = [p for s in scores for p in s]
    assert max(flat) - min(flat) > 1e-3  # the scores differ: a read at a wrong position would show
    if kind == "prm":
        with torch.inference_mode():  # the prefix tree forced: each prompt, and each step two solutions share, once
            tree, keys = shared_logits(fresh, tok, encoded, share_below=1.0)
        assert torch.sigmoid(tree).tolist() == pytest.approx(flat, abs=1e-5)
        first = [keys[sum(len(a.steps) for a in ATTEMPTS[:i])] for i in range(16)]
        assert first[:8] == first[8:] and len(set(keys)) == 48 - 8  # a right and a wrong solution's first step
    before = margin(kind, scores)

    data = ATTEMPTS + (VERDICTS if kind == "orm" else LABELS)
    request = TrainRequest(kind=kind, name=kind, data=tuple(m.id for m in data), base_model="smollm2-135m-instruct",
                           hyper={"max_steps": 1, "batch_size": 16, "learning_rate": 2e-3})
    result = trainer.train(request, data, PROBLEMS)
    m = result.metrics
    assert m["steps"] == 1 and m["labels"] == (16 if kind == "orm" else 48)
    # all of them, before and after; a PRM reads the first step a right and a wrong solution share once
    assert m["loss_check_examples"] == 16 and m["loss_check_labels"] == (16 if kind == "orm" else 40)
    # the one batch is the check sample, measured before its update: the same number (no dropout in training)
    assert m["loss_before"] == pytest.approx(m["first_loss"], abs=1e-5)
    # the fresh head's scores, recomputed in float32: the training read them under bf16 autocast on a CPU with bf16
    assert m["loss_before"] == pytest.approx(bce(kind, scores), abs=1e-2 if m["bf16"] else 1e-4)
    assert m["loss_base_rate"] == pytest.approx(0.693 if kind == "orm" else 0.673, abs=1e-3)  # 1/2, 3/5 positive
    verifier = Verifier(kind, AgentConfig(role="verifier"))
    assert verifier.load(result) == result.adapter
    rewards = verifier.score(ATTEMPTS, PROBLEMS)
    assert all(r.source == kind and r.adapter == result.adapter for r in rewards)
    scores = [[r.score] for r in rewards] if kind == "orm" else [list(r.rewards) for r in rewards]
    assert all(len(s) == (1 if kind == "orm" else len(a.steps)) for s, a in zip(scores, ATTEMPTS))
    after = margin(kind, scores)
    assert after > before, (before, after)
    assert m["loss_after"] == pytest.approx(bce(kind, scores), abs=1e-4)  # the trained model's, as its verifier scores


@pytest.mark.slow
def test_a_verifier_without_a_reward_model_says_so():
    v = Verifier("verifier", AgentConfig(role="verifier"))
    with pytest.raises(ValueError, match="no reward model loaded.*scorer='answer'"):
        v.score(GOOD[:1], PROBLEMS)
    (r,) = v.score(GOOD[:1], PROBLEMS, scorer="answer")
    assert r.source == "answer" and r.score == 1.0 and r.rewards == ()
    assert [x.score for x in v.score(BAD[:2], PROBLEMS, scorer="answer")] == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown scorer 'length'"):
        v.score(GOOD[:1], PROBLEMS, scorer="length")


@pytest.mark.slow
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
        SCORERS.unregister("length"), TRAINING_KINDS.unregister("count")
    with pytest.raises(ValueError, match="unknown training kind 'count'; known: sft, reflection, dpo, orm, prm, ppo, grpo"):
        t.train(TrainRequest(kind="count"), GOOD, PROBLEMS)


@pytest.mark.slow
def test_a_reward_model_for_another_backbone_is_refused(trainer, tmp_path):
    data = ATTEMPTS + VERDICTS
    request = TrainRequest(kind="orm", data=tuple(m.id for m in data), hyper={"max_steps": 1, "batch_size": 16})
    result = trainer.train(request, data, PROBLEMS)
    other = Verifier("orm", AgentConfig(role="verifier", model=str(tmp_path)))
    with pytest.raises(ValueError, match="trained on 'smollm2-135m-instruct', this verifier runs"):
        other.load(result)


@pytest.mark.slow
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


@pytest.mark.slow
def test_step_scores_land_on_the_tokens_that_end_their_steps(trainer):
    from schoolroom.agents.reinforce_kinds import rollouts
    from schoolroom.training.rl import encode_rollouts

    p = PROBLEMS[0]
    a = GOOD[0]
    prm = StepRewards(problem_id=p.problem_id, attempt_id=a.id, source="prm", rewards=(0.9, 0.2, 0.7))
    per_step = TrainRequest(kind="ppo", hyper={"step_rewards": True})
    (x,) = rollouts(trainer, per_step, [a, prm], {p.problem_id: p})
    assert x.reward == pytest.approx(0.2) and x.group == p.problem_id  # min, the default aggregation
    ends = [e for e, _ in x.step_rewards]
    assert [a.text[:e].endswith(s) for e, s in zip(ends, a.steps)] == [True] * 3 and ends[-1] == len(a.text)
    tok = trainer.tokenizer
    (row,) = encode_rollouts(tok, [x], max_length=512)
    assert sorted(row.rewards.values()) == pytest.approx([0.2, 0.7, 0.9])
    for k, (step, value) in zip(sorted(row.rewards), zip(a.steps, (0.9, 0.2, 0.7))):
        written = tok.decode(row.ids[row.start: row.start + k + 1])
        assert written.rstrip().endswith(step) and row.rewards[k] == pytest.approx(value)
    (last,) = encode_rollouts(tok, rollouts(trainer, TrainRequest(kind="ppo", hyper={"aggregate": "avg"}), [a, prm],
                                            {p.problem_id: p}), max_length=512)
    assert last.rewards == {last.actions - 1: pytest.approx(0.6)}  # one aggregated reward at the last token
    with pytest.raises(ValueError, match="has two StepRewards"):
        rollouts(trainer, per_step, [a, prm, prm], {p.problem_id: p})
    with pytest.raises(ValueError, match="has no StepRewards"):
        rollouts(trainer, per_step, [a], {p.problem_id: p})
    empty = StepRewards(problem_id=p.problem_id, attempt_id=a.id, source="prm", rewards=())
    (e,) = rollouts(trainer, TrainRequest(kind="ppo", hyper={"empty_reward": -1.0}), [a, empty], {p.problem_id: p})
    assert e.reward == -1.0


# plain unit tests: no model

def prm800k_rows(data_dir, **kw):
    from schoolroom.environment.prm800k import load_prm800k

    return load_prm800k(data_dir / "prm800k_phase1_test_stepwise_critique_derived", **kw)


def test_the_prm800k_split_holds_whole_problems_out_with_a_seed(data_dir):
    from schoolroom.environment.prm800k import rated_steps, split_by_problem

    rows = prm800k_rows(data_dir, unique=True)
    train, held = split_by_problem(rows, 0.3, seed=0)
    questions = [{p.question for p, _, _ in part} for part in (train, held)]
    assert (len(questions[0]), len(questions[1])) == (71, 30) and not questions[0] & questions[1]
    assert len(train) + len(held) == len(rows)
    assert split_by_problem(list(reversed(rows)), 0.3, seed=0)[1] == list(reversed(held))  # not by row order
    assert {p.question for p, _, _ in split_by_problem(rows, 0.3, seed=1)[1]} != questions[1]
    one = [x for x in rows if x[0].question == rows[0][0].question]
    assert split_by_problem(rows, 0.0)[1] == [] and split_by_problem(one, 0.5)[1] == []  # one problem: kept
    with pytest.raises(ValueError, match=r"held-out share is in \[0, 1\)"):
        split_by_problem(rows, 1.0)
    # each rated step is labelled in one solution only; the labels are those of the full paths
    every = prm800k_rows(data_dir)
    labels = [y for _, _, r in rows for y in r.rewards if y is not None]
    assert len(labels) == len(rated_steps(rows)) == len(rated_steps(every)) == 4819
    assert rated_steps(rows) == rated_steps(every)
    assert round(sum(labels) / len(labels), 3) == 0.648  # against 0.965 counted once per solution through a step
    read = [y for _, _, r in every for y in r.rewards if y is not None]
    assert round(sum(read) / len(read), 3) == 0.965


def test_auc_counts_ranks_and_intervals():
    import random

    from schoolroom.reporting.stats import auc, auc_count, bootstrap_groups, first_below, fmt_auc, lowest, rank_auc

    rng = random.Random(0)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(60)]  # many ties
    labels = [float(rng.random() < s + 0.3) for s in scores]
    assert rank_auc(scores, labels) == pytest.approx(auc(scores, [y > 0.5 for y in labels]))
    assert rank_auc([0.5, 0.5], [1.0, 1.0]) is None
    c = auc_count([0.9, 0.1, 0.8, 0.2, 0.5], [True, False, False, True, True], ["a", "a", "b", "b", "c"])
    assert (c.value, c.groups, c.pairs) == (0.5, 2, 2) and fmt_auc(c) == "0.50 (2 problems, 2 pairs)"
    none = auc_count([1.0, 2.0], [True, False], ["a", "b"])
    assert (none.value, none.groups, none.pairs) == (None, 0, 0) and fmt_auc(none).startswith("— (no problem")
    assert auc_count([0.1, 0.9], [True, False], ["a", "a"]).value == 0.0  # one pair, ranked wrong: a real 0
    groups = [i // 6 for i in range(60)]
    ci = bootstrap_groups(groups, lambda idx: rank_auc([scores[i] for i in idx], [labels[i] for i in idx]), 200)
    assert ci == bootstrap_groups(groups, lambda idx: rank_auc([scores[i] for i in idx], [labels[i] for i in idx]), 200)
    assert ci[0] < rank_auc(scores, labels) < ci[1]
    assert bootstrap_groups(groups, lambda idx: None) is None
    assert first_below([0.9, 0.6, 0.4, 0.1]) == 2 and first_below([0.9, None, 0.7]) is None
    assert lowest([0.5, 0.2, 0.2, 0.9]) == 1 and lowest([None, None]) is None


def test_the_heldout_check_sets_a_prm_beside_its_baselines():
    from schoolroom.protocols.reward_models import heldout_check

    def rows(problem: str, solutions: list[tuple[list[str], list[float]]]):
        p = Problem(problem_id=problem, dataset="test", question=problem)
        out = []
        for steps, labels in solutions:
            a = Attempt(problem_id=problem, text="\n".join(steps), steps=tuple(steps))
            out.append((p, a, StepRewards(problem_id=problem, attempt_id=a.id, rewards=tuple(labels))))
        return out

    train = rows("t", [(["a", "bb", "ccc"], [1.0, 1.0, 0.0]), (["a", "x"], [1.0, 0.0])])
    held = []
    for q in "pqrs":  # a shared first step, a right second step, and a wrong one at the same place
        held += rows(q, [([f"{q}1", f"{q}2 right", f"{q}3"], [1.0, 1.0, 1.0]), ([f"{q}1", f"{q}2 wrong"], [1.0, 0.0])])
    perfect = [tuple(0.9 if y > 0.5 else 0.1 for y in r.rewards) for _, _, r in held]
    table, m = heldout_check(train, held, perfect, resamples=200)
    assert (m["problems"], m["steps"], m["wrong_steps"]) == (4, 16, 4)  # the shared first step counts once
    assert (m["solutions_with_a_wrong_step"], m["solutions_without"]) == (4, 4)
    prm, const = m["scorers"]["PRM"], m["scorers"]["constant"]
    assert prm["step_auc"] == 1.0 and prm["first_wrong_lowest"] == 1.0 and prm["f1"] == 1.0
    assert const["step_auc"] == 0.5 and const["prm_lead"] == 0.5 and const["unflagged_correct"] == 1.0
    assert const["flagged_at_first_wrong"] == 0.0 and const["f1"] == 0.0  # half rated correct in training: never below 0.5
    assert [r[0] for r in table.rows] == ["PRM", "constant", "position", "length"]
    backwards = [tuple(1 - s for s in x) for x in perfect]
    assert heldout_check(train, held, backwards, resamples=200)[1]["scorers"]["PRM"]["step_auc"] == 0.0
    cut = [x[:1] for x in perfect]  # only the first step scored: the others are left out, and counted
    assert heldout_check(train, held, cut, resamples=200)[1]["unscored_steps"] == 12


def test_best_of_n_says_when_a_pick_is_no_better_than_a_random_sample():
    from schoolroom.protocols.best_of_n import against_random, random_line

    correct = [True, False, False, False] * 20 + [True, True, False, False] * 20  # a random pick: 1/4, then 1/2
    always = against_random([True] * 40, correct, per=4)
    assert always["random"] == pytest.approx(0.375) and always["better"] is True
    coin = against_random([i % 4 == 0 for i in range(20)] + [i % 2 == 0 for i in range(20)], correct, per=4)
    assert coin["difference"] == pytest.approx(0.0) and coin["better"] is None
    assert random_line("ORM", coin, 4).startswith("ORM picks no better than a random one of its 4 samples: 37.5%")
    assert against_random([False] * 40, correct, per=4)["better"] is False
