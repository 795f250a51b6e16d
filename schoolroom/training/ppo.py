"""PPO on logged rollouts, written here on torch + peft (TRL removed its PPOTrainer).

One call is one PPO iteration on a batch of rollouts the Student already wrote (any engine):

1. old log-probabilities, values and entropy under the current policy (the adapter the rollouts came from),
   and log-probabilities under the reference policy (the RL start; the base model when there is none);
2. per-token rewards: -kl_coef * (log pi_old - log pi_ref) at every token, plus the reward at the last token
   (the ORM score, the answer check, or the aggregated PRM score) or, with ``step_rewards``, each step's PRM
   score at the token that ends the step;
3. generalised advantage estimation (gamma, lam) against the value head, advantages whitened over the batch;
4. ``epochs`` passes of minibatch updates of the clipped policy objective plus ``vf_coef`` times the clipped
   value loss.

The value head (a linear layer on the policy's last hidden state, sharing its LoRA backbone) is saved beside
the adapter as ``value_head.safetensors`` and continued by the next iteration. Defaults follow TRL's last
PPO (``PPOConfig``: kl_coef 0.05, cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, gamma 1, lam 0.95, 4 epochs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from schoolroom.training.common import fit, mean_of, model_flops
from schoolroom.training.rl import (Experience, Rollout, acting, action_forward, action_mask, behaviour,
                                    clipped_policy_loss, forward_rows, forward_tokens, masked_mean, minibatching,
                                    prepare, separate_reference, reference_logprobs, shares_in_updates, stack,
                                    start_stats)
from schoolroom.training.settings import PPOConfig

VALUE_HEAD = "value_head.safetensors"


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimates and returns, ``[b, actions]``: delta_t = r_t + gamma V_{t+1} - V_t and
    A_t = delta_t + gamma lam A_{t+1}, with V = 0 after the last action."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    width = rewards.shape[1]
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, advantages + values


def whiten(x, mask):
    """(x - mean) / std over the real actions of the batch."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * (var + 1e-8).rsqrt() * mask


def clipped_value_loss(values, old_values, returns, mask, clip: float):
    """0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2) per action, and the share clipped."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    a, b = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * torch.max(a, b), float(masked_mean((b > a).float(), mask))


def kl_rewards(rows: list[Experience], kl_coef: float) -> None:
    """Each row's per-token rewards: the KL penalty everywhere, the reward(s) where they were placed."""
    for r in rows:
        kl = r.old_logp - r.ref_logp
        rewards = -kl_coef * kl
        for k, v in r.rewards.items():
            rewards[k] += v
        r.kl, r.token_rewards = kl, rewards


class PolicyWithValue(torch.nn.Module):
    """The peft policy and its value head, trained together."""

    def __init__(self, policy, head):
        super().__init__()
        self.policy, self.head = policy, head


def value_head(policy, init_adapter: str | None):
    """A linear value head on the policy's hidden size: the one saved with ``init_adapter``, else zeros."""
    from safetensors.torch import load_file

    hidden = policy.get_base_model().config.hidden_size
    head = torch.nn.Linear(hidden, 1).to(next(policy.parameters()).device)
    path = os.path.join(init_adapter, VALUE_HEAD) if init_adapter else None
    if path and os.path.exists(path):
        head.load_state_dict(load_file(path))
    else:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return head


def before_update(policy, head, rows: list[Experience], h: dict[str, Any], pad_id: int, precision,
                  init_adapter: str | None, reference_adapter: str | None):
    """Steps 1-3 on ``rows``: old log-probabilities, entropy and values (one forward), the reference's, per-token
    rewards, GAE advantages and returns; each row gets its tensors. Returns (values, returns, mask), batched."""
    current = forward_rows(policy, rows, pad_id, h, precision)
    ref = reference_logprobs(policy, rows, pad_id, h, init_adapter, reference_adapter, current, precision)
    with torch.no_grad():
        for r, (logp, ent, hid), ref_logp in zip(rows, current, ref):
            r.old_logp, r.entropy, r.old_values, r.ref_logp = logp, ent, head(hid).squeeze(-1), ref_logp
    behaviour(rows, h)
    kl_rewards(rows, float(h["kl_coef"]))
    dev = rows[0].old_logp.device
    token_rewards, values = stack(rows, "token_rewards", dev), stack(rows, "old_values", dev)
    mask = action_mask(rows, dev)
    advantages, returns = gae(token_rewards, values, mask, float(h["gamma"]), float(h["lam"]))
    if h["whiten"]:
        advantages = whiten(advantages, mask)
    for i, r in enumerate(rows):
        r.advantages, r.returns = advantages[i, : r.actions], returns[i, : r.actions]
    return values, returns, mask


def ppo_step(policy, head, h: dict[str, Any], pad_id: int):
    """Step 4's loss on a (micro-)batch of rows: the clipped policy objective plus ``vf_coef`` times the clipped
    value loss, each a mean over the batch's actions; with the numbers to log."""
    temp, chunk, clip, clip_value, vf_coef = (float(h["temperature"]), int(h["logprob_chunk"]), float(h["clip"]),
                                              float(h["clip_value"]), float(h["vf_coef"]))
    share = shares_in_updates(h)

    def step(batch):
        logp, _, hid, m = action_forward(policy, batch, pad_id, temp, chunk=chunk, share=share)
        dev = logp.device
        v = head(hid).squeeze(-1)
        old, adv = stack(batch, "behaviour_logp", dev), stack(batch, "advantages", dev)
        pg, clipfrac, approx_kl = clipped_policy_loss(logp, old, adv, m, clip)
        vl, vclipfrac = clipped_value_loss(v, stack(batch, "old_values", dev), stack(batch, "returns", dev), m,
                                           clip_value)
        pg, vl = masked_mean(pg, m), masked_mean(vl, m)
        return pg + vf_coef * vl, {"policy_loss": float(pg.detach()), "value_loss": float(vl.detach()),
                                   "clipfrac": clipfrac, "approx_kl": approx_kl, "value_clipfrac": vclipfrac}

    return step


def train_ppo(model_path: str, rollouts: list[Rollout], out_dir: str, lora: dict[str, Any] = {},
              settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu", init_adapter: str | None = None,
              tokenizer=None, reference_adapter: str | None = None, dtype: str = "auto") -> dict[str, float]:
    """One PPO iteration on ``rollouts`` (see ``schoolroom.training.rl``); the adapter and value head to ``out_dir``."""
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    h, everyone, policy, precision = prepare(model_path, rollouts, PPOConfig, settings, seed, device, init_adapter,
                                             lora, tokenizer, dtype)
    rows = acting(everyone)  # a rollout with no action has no token to put its reward on
    head = value_head(policy, init_adapter)
    passes = 1 + separate_reference(policy, init_adapter, reference_adapter)  # forward-only passes over the rows
    values, returns, mask = before_update(policy, head, rows, h, tokenizer.pad_token_id, precision, init_adapter,
                                          reference_adapter)
    updates = minibatching(rows, h, ppo_step(policy, head, h, tokenizer.pad_token_id),
                           weight=lambda r: r.actions)  # the loss is a mean over the batch's tokens
    logs = fit(PolicyWithValue(policy, head), seed=seed, schedule="constant", dropout=False, precision=precision,
               **updates)
    os.makedirs(out_dir, exist_ok=True)
    policy.save_pretrained(out_dir, selected_adapters=["default"])
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, os.path.join(out_dir, VALUE_HEAD))
    return start_stats(rows, everyone) | {
        "policy_loss": mean_of(logs, "policy_loss"), "value_loss": mean_of(logs, "value_loss"),
        "clipfrac": mean_of(logs, "clipfrac"), "approx_kl": mean_of(logs, "approx_kl"),
        "value_clipfrac": mean_of(logs, "value_clipfrac"), "first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
        "returns_mean": float(masked_mean(returns, mask)), "values_mean": float(masked_mean(values, mask)),
        "steps": float(len(logs)), "seconds": time.perf_counter() - t0} | precision.metrics() | model_flops(
        policy, forward_tokens(rows, passes, bool(h["share_prompts"])), logs)
