"""The pieces of RL against values computed by hand: aggregation, PPO's ratio, clipping, GAE, KL and value loss,
GRPO's group advantages, and where rewards land among a rollout's tokens."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from schoolroom.training.aggregate import AGGREGATIONS, aggregate, aggregation
from schoolroom.training.grpo import group_advantages
from schoolroom.training.ppo import clipped_value_loss, gae, kl_rewards, whiten
from schoolroom.training.rl import Experience, Rollout, clipped_policy_loss, kl_k3, masked_mean


def close(t, nested):
    torch.testing.assert_close(t, torch.tensor(nested, dtype=t.dtype), atol=1e-4, rtol=1e-5)


HAND = {  # scores -> {how: value}
    (0.9, 0.5, 0.8): {"min": 0.5, "max": 0.9, "avg": 2.2 / 3, "prod": 0.36, "last": 0.8},
    (0.3,): {"min": 0.3, "max": 0.3, "avg": 0.3, "prod": 0.3, "last": 0.3},
    (0.9, None, 0.4): {"min": 0.4, "max": 0.9, "avg": 0.65, "prod": 0.36, "last": 0.4},  # an unscored step is left out
    (): {"min": None, "max": None, "avg": None, "prod": None, "last": None},
    (None,): {"min": None, "max": None, "avg": None, "prod": None, "last": None},
}


@pytest.mark.parametrize("scores", list(HAND), ids=str)
def test_aggregate_against_hand_values(scores):
    for how, want in HAND[scores].items():
        got = aggregate(scores, how)
        assert got == pytest.approx(want) if want is not None else got is None, (how, got, want)


def test_a_new_aggregation_is_a_function_and_a_registration():
    with pytest.raises(ValueError, match="unknown aggregation 'median'.*min, max, avg, prod, last"):
        aggregate([1.0], "median")

    @aggregation("median")
    def median(scores):
        return sorted(scores)[len(scores) // 2]

    try:
        assert aggregate([0.1, 0.9, 0.5], "median") == 0.5
    finally:
        AGGREGATIONS.unregister("median")


def test_ratio_and_clipping_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5]]))  # ratios 1.5, 0.5, 1.1, 0.5
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, clipfrac, approx_kl = clipped_policy_loss(logp, old, adv, mask, clip=0.2)
    # max(-A r, -A clip(r)): 1.5 -> max(-1.5, -1.2); 0.5 -> max(-0.5, -0.8); 1.1 (A<0) -> 1.1; 0.5 (A<0) -> max(0.5, 0.8)
    close(loss, [[-1.2, -0.5, 1.1, 0.8]])
    assert clipfrac == pytest.approx(0.5)  # the first and the last were clipped
    r = [1.5, 0.5, 1.1, 0.5]
    assert approx_kl == pytest.approx(sum((x - 1) - math.log(x) for x in r) / 4)
    masked = clipped_policy_loss(logp, old, adv, torch.tensor([[1.0, 1.0, 0.0, 0.0]]), clip=0.2)
    assert masked[1] == pytest.approx(0.5)  # of the two real actions, one clipped


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.1, 0.2, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second row has two actions: 9.0 and 5.0 are padding
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 1: d2 = 1 - .7 = .3; d1 = .9*.7 - .6 = .03; d0 = .9*.6 - .5 = .04; A = d + .72 A_next
    a2, a1 = 0.3, 0.03 + 0.72 * 0.3
    a0 = 0.04 + 0.72 * a1
    # row 2: V after the last action is 0: d1 = 2 - .2 = 1.8; d0 = .9*.2 - .1 = .08
    b1, b0 = 1.8, 0.08 + 0.72 * 1.8
    close(adv, [[a0, a1, a2], [b0, b1, 0.0]])
    close(ret, [[a0 + 0.5, a1 + 0.6, a2 + 0.7], [b0 + 0.1, b1 + 0.2, 0.0]])


def experience(actions: int, **fields) -> Experience:
    """A row of ``actions`` actions with only the fields a test needs set."""
    return Experience(**{"ids": [], "start": 0, "actions": actions, "rewards": {}, "score": 0.0, "group": None,
                         "sampled": True, "engine_logp": None} | fields)


def test_kl_penalty_and_estimator_by_hand():
    rows = [experience(2, old_logp=torch.tensor([-1.0, -2.0]), ref_logp=torch.tensor([-1.5, -1.0]), rewards={1: 1.0})]
    kl_rewards(rows, kl_coef=0.1)
    assert rows[0].kl.tolist() == pytest.approx([0.5, -1.0])  # log pi_old - log pi_ref
    assert rows[0].token_rewards.tolist() == pytest.approx([-0.05, 0.1 + 1.0])  # the reward at its token
    k3 = kl_k3(torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25])))
    assert k3.item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert kl_k3(torch.tensor([-0.7]), torch.tensor([-0.7])).item() == 0.0


def test_value_loss_and_whitening_by_hand():
    loss, frac = clipped_value_loss(torch.tensor([[1.0, 0.6]]), torch.tensor([[0.5, 0.5]]),
                                    torch.tensor([[2.0, 0.0]]), torch.ones(1, 2), clip=0.2)
    # 1.0 clipped to 0.7: max((1-2)^2, (0.7-2)^2) = 1.69; 0.6 within the clip: 0.36
    close(loss, [[0.5 * 1.69, 0.5 * 0.36]])
    assert frac == pytest.approx(0.5)
    x = torch.tensor([[1.0, 3.0, 100.0]])
    w = whiten(x, torch.tensor([[1.0, 1.0, 0.0]]))
    close(w, [[-1.0, 1.0, 0.0]])
    assert masked_mean(x, torch.tensor([[1.0, 1.0, 0.0]])).item() == 2.0


def test_group_advantages_by_hand():
    adv = group_advantages([1, 0, 0, 1, 1, 1, 1, 1, 0.5, 0.0], ["a"] * 4 + ["b"] * 4 + ["c"] * 2)
    s = 0.5 / (0.5 + 1e-4)
    assert adv == pytest.approx([s, -s, -s, s, 0, 0, 0, 0, 0.25 / (0.25 + 1e-4), -0.25 / (0.25 + 1e-4)])
    assert group_advantages([1.0, 0.0], ["a", "a"], scale=False) == [0.5, -0.5]  # Dr. GRPO: no std


def test_auc_over_all_and_within_groups():
    from schoolroom.reporting.stats import auc

    scores, correct = [0.9, 0.1, 0.8, 0.2], [True, False, False, True]
    assert auc(scores, correct) == 0.75  # .9>.1, .9>.8, .2>.1 win; .2<.8 loses
    assert auc(scores, correct, ["a", "a", "b", "b"]) == 0.5  # only .9 vs .1 and .2 vs .8 are compared
    assert auc([0.3, 0.3], [True, False]) == 0.5  # a tie counts half
    assert auc([1.0, 2.0], [True, False], ["a", "b"]) is None  # no problem has both kinds
    assert auc([None, 1.0], [True, False]) is None


@pytest.fixture(scope="module")
def tok():
    from schoolroom import models

    return models.load_tokenizer("smollm2-135m-instruct")


def test_the_trainer_acts_on_the_ids_sampled_with_the_stop_token(tok):
    from schoolroom.training.rl import encode_rollouts

    # "the answer" sampled letter by letter: decoding and tokenizing again gives other (fewer) ids
    sampled = tok.convert_tokens_to_ids(list("the")) + tok(" answer is 5")["input_ids"] + [tok.eos_token_id]
    assert tok(tok.decode(sampled, skip_special_tokens=True))["input_ids"] != sampled[:-1]
    x = Rollout(prompt="Q: ?\nA:", completion=tok.decode(sampled, skip_special_tokens=True), reward=1.0,
                completion_ids=list(sampled), logprobs=[-0.5 for _ in sampled], group="p")
    (row,) = encode_rollouts(tok, [x], max_length=512)
    assert row.ids[row.start:] == sampled and row.actions == len(sampled)
    assert row.ids[-1] == tok.eos_token_id and row.rewards == {len(sampled) - 1: 1.0}  # stopping is an action
    assert row.engine_logp == [-0.5] * len(sampled) and row.sampled
    (short,) = encode_rollouts(tok, [x], max_length=row.start + 3)  # cut by max_length: ids and logprobs alike
    assert short.ids[short.start:] == sampled[:3] and len(short.engine_logp) == 3
    (text,) = encode_rollouts(tok, [replace(x, completion_ids=None)], max_length=512)  # an engine without ids
    assert tok.eos_token_id not in text.ids and text.engine_logp is None and not text.sampled


def test_step_rewards_land_on_the_sampled_token_that_ends_the_step(tok):
    from schoolroom.training.rl import encode_rollouts

    steps = ["2 + 3 = 5", "5 * 2 = 10", "#### 10"]
    text = "\n".join(steps)
    sampled = [i for ch in text for i in tok.convert_tokens_to_ids([{" ": "Ġ", "\n": "Ċ"}.get(ch, ch)])]  # a token a character
    assert tok.decode(sampled) == text
    ends = [text.index(s) + len(s) for s in steps]
    x = Rollout(prompt="Q:", completion=text, reward=0.0, completion_ids=list(sampled),
                step_rewards=list(zip(ends, (0.9, 0.2, 0.7))))
    (row,) = encode_rollouts(tok, [x], max_length=512)
    assert row.rewards == {e - 1: v for e, v in zip(ends, (0.9, 0.2, 0.7))}


def test_an_empty_completion_stays_in_its_group(tok):
    from schoolroom.training.grpo import advantage_rows
    from schoolroom.training.rl import encode_rollouts

    rollouts = [Rollout(prompt="Q:", completion="#### 5", reward=1.0, group="a"),
                Rollout(prompt="Q:", completion="", reward=0.0, group="a"),  # no ids, no text: no action
                Rollout(prompt="Q:", completion="", reward=0.0, group="b", completion_ids=[tok.eos_token_id]),
                Rollout(prompt="Q:", completion="#### 5", reward=1.0, group="b")]
    everyone = encode_rollouts(tok, rollouts, max_length=512)
    assert [r.actions for r in everyone] == [len(tok("#### 5")["input_ids"]), 0, 1, len(tok("#### 5")["input_ids"])]
    rows = advantage_rows(everyone)
    # the empty rollout's 0 is in group a's mean and std: the correct one is pushed up, not left at 0
    assert len(rows) == 3 and rows[0].group_advantage == pytest.approx(1.0, abs=1e-3)
    # stopping at once, with its stop token as the action, is penalised
    assert rows[1].group_advantage == pytest.approx(-1.0, abs=1e-3) and rows[1].ids[-1] == tok.eos_token_id


def test_logprob_gap_is_measured_only_where_the_engine_gave_logprobs():
    from schoolroom.training.rl import logprob_gap

    rows = [experience(2, old_logp=torch.tensor([-1.0, -2.0]), engine_logp=[-1.5, -2.0]),
            experience(1, old_logp=torch.tensor([-1.0]), engine_logp=None)]
    assert logprob_gap(rows) == pytest.approx(0.25)
    assert logprob_gap(rows[1:]) is None
