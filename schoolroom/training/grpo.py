"""GRPO on logged rollouts, written here beside PPO on the same pieces.

TRL's GRPOTrainer samples its own completions inside the trainer; here the Student's logged Attempts are
the rollouts (any engine wrote them), so the objective is written out instead (DeepSeekMath, eq. 3):

- advantages are group-relative: each rollout's reward minus the mean of its group (the n samples of one
  problem), divided by the group's standard deviation (``scale_rewards``; Dr. GRPO turns it off), the same
  for every token of the rollout; a group whose rewards are all equal teaches nothing; every rollout is in its
  group's statistics, an empty one too (as TRL: its reward counts; with token ids it has its stop token as
  an action and is penalised like any other);
- the same clipped surrogate as PPO, no value head;
- ``beta`` * KL(policy || reference) per token with the k3 estimator, the reference being the RL start.

Loss per rollout: the mean over its tokens; per batch: the mean over rollouts (the paper's form).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from typing import Any

import torch

from schoolroom.training.common import fit, mean_of, model_flops
from schoolroom.training.rl import (Experience, Rollout, acting, action_forward, behaviour, clipped_policy_loss,
                                    forward_rows, forward_tokens, kl_k3, masked_mean, minibatching, prepare,
                                    reference_logprobs, separate_reference, shares_in_updates, stack, start_stats)
from schoolroom.training.settings import GRPOConfig


def group_advantages(scores: list[float], groups: list[Any], scale: bool = True, eps: float = 1e-4) -> list[float]:
    """(r - mean of its group) / (std of its group + eps); the population std, as in the paper's code."""
    members: dict[Any, list[float]] = defaultdict(list)
    for s, g in zip(scores, groups):
        members[g].append(s)
    stats = {g: (statistics.fmean(v), statistics.pstdev(v)) for g, v in members.items()}
    return [(s - stats[g][0]) / ((stats[g][1] + eps) if scale else 1.0) for s, g in zip(scores, groups)]


def advantage_rows(everyone: list[Experience], scale: bool = True) -> list[Experience]:
    """Each row's group advantage, from the rewards of every rollout of its group (empty ones too); then the rows
    with an action, which are what the policy trains on."""
    advantages = group_advantages([r.score for r in everyone], [r.group for r in everyone], scale)
    for r, a in zip(everyone, advantages):
        r.group_advantage = a
    return acting(everyone)


def train_grpo(model_path: str, rollouts: list[Rollout], out_dir: str, lora: dict[str, Any] = {},
               settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu", init_adapter: str | None = None,
               tokenizer=None, reference_adapter: str | None = None, dtype: str = "auto", kind: type = GRPOConfig,
               shape=None) -> dict[str, float]:
    """One GRPO iteration on ``rollouts`` (grouped by their ``group``); the adapter to ``out_dir``. ``kind``: the
    settings' class; ``shape(row, h)``: each action's advantage from the row (on-policy distillation's), instead of
    its group advantage at every action."""
    t0 = time.perf_counter()
    h, everyone, policy, precision = prepare(model_path, rollouts, kind, settings, seed, device, init_adapter,
                                             lora, tokenizer, dtype)
    rows = advantage_rows(everyone, bool(h["scale_rewards"]))
    pad_id, temp, chunk, beta = tokenizer.pad_token_id, float(h["temperature"]), int(h["logprob_chunk"]), float(h["beta"])
    passes = 1 + bool(beta and separate_reference(policy, init_adapter, reference_adapter))  # forward-only passes
    current = forward_rows(policy, rows, pad_id, h, precision)
    ref = reference_logprobs(policy, rows, pad_id, h, init_adapter, reference_adapter, current, precision) if beta else None
    for i, (r, (logp, ent, _)) in enumerate(zip(rows, current)):
        r.old_logp, r.entropy = logp, ent
        r.advantages = torch.full_like(logp, r.group_advantage) if shape is None else shape(r, h)
        r.ref_logp = ref[i] if ref is not None else logp
    behaviour(rows, h)
    dev, share = rows[0].old_logp.device, shares_in_updates(h)

    def step(batch):
        logp, _, _, m = action_forward(policy, batch, pad_id, temp, chunk=chunk, share=share)
        loss, clipfrac, approx_kl = clipped_policy_loss(logp, stack(batch, "behaviour_logp", dev),
                                                        stack(batch, "advantages", dev), m, float(h["clip"]))
        kl = kl_k3(logp, stack(batch, "ref_logp", dev))
        per_rollout = masked_mean(loss + beta * kl, m, dim=1)
        return per_rollout.mean(), {"clipfrac": clipfrac, "approx_kl": approx_kl}

    logs = fit(policy, seed=seed, schedule="constant", dropout=False, precision=precision,
               **minibatching(rows, h, step))  # the loss is a mean over the batch's rollouts
    os.makedirs(out_dir, exist_ok=True)
    policy.save_pretrained(out_dir, selected_adapters=["default"])
    groups: dict[Any, list[float]] = defaultdict(list)
    for r in everyone:
        groups[r.group].append(r.score)
    flat = sum(1 for v in groups.values() if max(v) == min(v))
    stats = start_stats(rows, everyone)
    if ref is None:  # beta = 0: the reference was not computed, so there is no KL to report
        stats.pop("kl")
    if shape is not None:
        stats |= {"advantage_mean": float(torch.cat([r.advantages for r in rows]).mean()),
                  "advantage_abs": float(torch.cat([r.advantages for r in rows]).abs().mean())}
    return stats | {
        "groups": float(len(groups)), "flat_groups": float(flat), "clipfrac": mean_of(logs, "clipfrac"),
        "approx_kl": mean_of(logs, "approx_kl"), "first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
        "steps": float(len(logs)), "seconds": time.perf_counter() - t0} | precision.metrics() | model_flops(
        policy, forward_tokens(rows, passes, bool(h["share_prompts"])), logs)
