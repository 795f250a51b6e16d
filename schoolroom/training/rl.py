"""What PPO and GRPO share: logged rollouts as tokens, log-probabilities under the policy and its reference,
and the clipped objective.

A :class:`Rollout` is what a training kind hands over: the prompt exactly as the student saw it, the completion it
wrote, the token ids the engine sampled for it (with the stop token when it stopped on one) and their sampling
log-probabilities, its scalar reward, optional ``(character end, score)`` pairs for rewards placed at the ends of
steps, and its group (the problem, for GRPO). Each becomes an :class:`Experience` (OpenRLHF's name): its tokens,
and the tensors an update computes for it, one value per action.

The actions are exactly the sampled ids: the stop token is an action (stopping is rewarded or penalised like
any token; the reward of the whole rollout lands on it), and no token is re-tokenized from decoded text. A
rollout without ids (an engine that gives none: openai, reference) falls back to its text tokenized again.

Everything below works in *action space*: one position per completion token, ``[batch, actions]``,
left-aligned, with a mask. The old log-probabilities are recomputed here under the policy the rollouts came
from; their mean absolute gap to the engine's sampling log-probabilities (``logprob_gap``) is the standard check
that the engine and the trainer compute the same policy (verl and OpenRLHF report it too).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Rollout:
    """One sampled completion with its reward, as a training kind hands it to PPO or GRPO."""

    prompt: str  # exactly as the student saw it (chat template applied)
    completion: str  # the text it wrote
    reward: float
    group: Any = None  # the rollouts of one problem share it (GRPO's group)
    completion_ids: list[int] | None = None  # the ids the engine sampled, stop token included; None: tokenize again
    logprobs: list[float] | None = None  # the engine's sampling log-probability of each of those ids
    step_rewards: list[tuple[int, float]] = field(default_factory=list)  # (character end of a step, its score)


@dataclass
class Experience:
    """One rollout as an update trains on it. ``A`` is its number of actions (completion tokens kept); each tensor
    below is ``[A]``, filled in by the update that computes it."""

    ids: list[int]  # prompt and completion token ids, cut at max_length
    start: int  # where the completion starts in ``ids``
    actions: int  # A
    rewards: dict[int, float]  # action index -> the reward placed there (the last action, or each step's end)
    score: float  # the rollout's reward
    group: Any
    sampled: bool  # its actions are the engine's sampled ids (not text tokenized again)
    engine_logp: list[float] | None  # [A] the engine's sampling log-probabilities (None: it gave none)
    old_logp: torch.Tensor | None = None  # [A] the policy's log-probabilities before the update
    entropy: torch.Tensor | None = None  # [A] the policy's entropy at each action
    ref_logp: torch.Tensor | None = None  # [A] the reference policy's log-probabilities
    advantages: torch.Tensor | None = None  # [A] PPO: GAE (whitened); GRPO: the group advantage at every action
    group_advantage: float | None = None  # GRPO: (reward - group mean) / group std
    old_values: torch.Tensor | None = None  # [A] PPO: the value head before the update
    returns: torch.Tensor | None = None  # [A] PPO: advantages + values
    kl: torch.Tensor | None = None  # [A] PPO: old_logp - ref_logp
    token_rewards: torch.Tensor | None = None  # [A] PPO: the KL penalty at every action, the rewards where placed


def encode_rollouts(tokenizer, rollouts: list[Rollout], max_length: int) -> list[Experience]:
    """Token ids per rollout, where its completion starts, and the action index of each reward: the score at the
    last action, or each step's score at the token that ends the step. Every rollout gives a row: an empty one
    (no action left, e.g. empty text without ids) still counts in its group's reward statistics."""
    rows = []
    for x in rollouts:
        p = tokenizer(x.prompt, add_special_tokens=False)["input_ids"]
        sampled = x.completion_ids
        if sampled is not None:
            c = list(sampled)
            pieces = tokenizer.batch_decode([[t] for t in c], skip_special_tokens=True)
            ends = list(itertools.accumulate(len(piece) for piece in pieces))  # character end of each token
        else:
            enc = tokenizer(x.completion, add_special_tokens=False, return_offsets_mapping=True)
            c, ends = enc["input_ids"], [e for _, e in enc["offset_mapping"]]
        ids = (p + c)[:max_length]
        n = max(0, len(ids) - len(p))  # completion tokens kept
        rewards: dict[int, float] = {}
        if n and x.step_rewards:
            for char_end, value in x.step_rewards:
                k = next((i for i, e in enumerate(ends[:n]) if e >= char_end), None)
                if k is not None:  # a step cut off by max_length earns nothing
                    rewards[k] = rewards.get(k, 0.0) + float(value)
        elif n:
            rewards[n - 1] = float(x.reward)
        engine = x.logprobs if sampled is not None else None
        rows.append(Experience(ids=ids, start=len(p), actions=n, rewards=rewards, score=float(x.reward), group=x.group,
                               sampled=sampled is not None,
                               engine_logp=list(engine[:n]) if engine is not None else None))
    return rows


def acting(rows: list[Experience]) -> list[Experience]:
    """The rows with at least one action: what the policy trains on."""
    return [r for r in rows if r.actions]


def logprob_gap(rows: list[Experience]) -> float | None:
    """Mean absolute difference, per token, between the recomputed old log-probabilities and the engine's
    sampling ones; None when no rollout carried them."""
    gaps = [(r.old_logp - torch.tensor(r.engine_logp, device=r.old_logp.device)).abs()
            for r in rows if r.engine_logp is not None]
    return float(torch.cat(gaps).mean()) if gaps else None


def pad(rows: list[Experience], pad_id: int, device):
    """Right-padded ids and attention mask for whole sequences."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        attn[i, : len(r.ids)] = 1
    return ids.to(device), attn.to(device)


def to_actions(x, rows: list[Experience]):
    """``x[b, t]`` about the token after position t (logits shifted by one) -> ``[b, actions]`` of each row's
    completion tokens, left-aligned, and the mask of real actions."""
    out = x.new_zeros((len(rows), max(r.actions for r in rows)) + tuple(x.shape[2:]))
    for i, r in enumerate(rows):
        out[i, : r.actions] = x[i, r.start - 1 : r.start - 1 + r.actions]
    return out, action_mask(rows, x.device)


def stack(rows: list[Experience], key: str, device):
    """The per-row action tensors ``rows[i].<key>`` as one left-aligned ``[b, actions]`` tensor (zeros beyond)."""
    width = max(r.actions for r in rows)
    out = torch.zeros((len(rows), width), device=device)
    for i, r in enumerate(rows):
        out[i, : r.actions] = getattr(r, key)
    return out


def action_mask(rows: list[Experience], device):
    mask = torch.zeros((len(rows), max(r.actions for r in rows)), device=device)
    for i, r in enumerate(rows):
        mask[i, : r.actions] = 1
    return mask


def start_stats(rows: list[Experience], everyone: list[Experience]) -> dict[str, float]:
    """Before any update: the mean reward of every rollout (``everyone``, empty ones too), and over the acting
    ``rows`` the per-token KL(policy || reference) (k3), the entropy of the policy, and the gap between the
    recomputed and the engine's log-probabilities (only where it was measured)."""
    dev = rows[0].old_logp.device
    mask = action_mask(rows, dev)
    kl = kl_k3(stack(rows, "old_logp", dev), stack(rows, "ref_logp", dev))
    scores = [r.score for r in everyone]
    gap = logprob_gap(rows)
    return {"reward_mean": sum(scores) / len(scores), "rollouts": float(len(everyone)),
            "empty_rollouts": float(len(everyone) - len(rows)),
            "retokenized_rollouts": float(sum(not r.sampled for r in everyone)),
            "completion_tokens": float(sum(r.actions for r in rows)), "kl": float(masked_mean(kl, mask)),
            "entropy": float(masked_mean(stack(rows, "entropy", dev), mask))} | (
        {"logprob_gap": gap} if gap is not None else {})


def action_forward(model, rows: list[Experience], pad_id: int, temperature: float = 1.0,
                   entropy: bool = False):
    """One forward pass over ``rows``: for each completion token, its log-probability given what precedes it (the
    logits divided by the sampling temperature, as the rollouts were sampled), the entropy there (``entropy``),
    and the last hidden state that predicted it; ``[b, actions]`` with the mask. The output layer runs on the
    completion positions only: the prompt's logits are never needed."""
    device = next(model.parameters()).device
    ids, attn = pad(rows, pad_id, device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state
    h, mask = to_actions(hidden[:, :-1], rows)
    targets, _ = to_actions(ids[:, 1:], rows)
    logp_all = torch.log_softmax(base.get_output_embeddings()(h).float() / temperature, dim=-1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
    return logp, ent, h, mask


def masked_mean(x, mask, dim=None):
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def clipped_policy_loss(logp, old_logp, advantages, mask, clip: float):
    """The PPO clipped surrogate per action: max(-A r, -A clip(r, 1-e, 1+e)) with r = exp(logp - old_logp); also
    the share of actions where clipping bit, and the approximate KL(old || new) (Schulman's k3)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip, 1 + clip))
    clipped = ((-advantages * torch.clamp(ratio, 1 - clip, 1 + clip)) > (-advantages * ratio)).float()
    approx_kl = (ratio - 1) - log_ratio
    return loss, float(masked_mean(clipped, mask)), float(masked_mean(approx_kl.detach(), mask))


def kl_k3(logp, ref_logp):
    """Per-action KL(policy || reference), the non-negative unbiased estimator exp(ref - logp) - (ref - logp) - 1."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def forward_rows(model, rows: list[Experience], pad_id: int, temperature: float, batch_size: int):
    """Per row, without gradients: (log-probabilities, entropy, hidden states) of its completion tokens."""
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            logp, ent, hid, _ = action_forward(model, chunk, pad_id, temperature, entropy=True)
            out += [(logp[j, : r.actions], ent[j, : r.actions], hid[j, : r.actions])
                    for j, r in enumerate(chunk)]
    return out


def reference_logprobs(policy, rows, pad_id: int, h: dict[str, Any], init_adapter: str | None,
                       reference_adapter: str | None, current: list):
    """Log-probabilities under the reference policy: the start adapter (``reference_adapter``, loaded beside the
    trained one and removed after), or the base model with the adapter disabled when there is none. When the
    reference is the adapter being continued (the first iteration), they are the current ones."""
    if reference_adapter is not None and reference_adapter == init_adapter:
        return [c[0] for c in current]
    if reference_adapter is None:
        with policy.disable_adapter():
            return [c[0] for c in forward_rows(policy, rows, pad_id, float(h["temperature"]), int(h["batch_size"]))]
    policy.load_adapter(reference_adapter, adapter_name="reference", is_trainable=False)
    policy.set_adapter("reference")
    try:
        return [c[0] for c in forward_rows(policy, rows, pad_id, float(h["temperature"]), int(h["batch_size"]))]
    finally:
        policy.set_adapter("default")  # trainable again
        policy.delete_adapter("reference")


def prepare(model_path: str, rollouts: list[Rollout], kind: type, settings: dict[str, Any],
            seed: int, device: str, init_adapter: str | None, lora: dict[str, Any], tokenizer):
    """The settings (``kind``'s config: its defaults under ``settings``), the rollouts as rows (every one: see ``acting``), and the policy with a trainable adapter
    (``init_adapter`` continued, or a fresh LoRA) in eval mode: what an RL iteration starts from."""
    from peft import get_peft_model
    from transformers import set_seed

    from schoolroom.training.common import hyper, load_policy, lora_config

    set_seed(seed)
    h = hyper(settings, kind)
    rows = encode_rollouts(tokenizer, rollouts, int(h["max_length"]))
    if not acting(rows):
        raise ValueError("no rollout with a completion to train on")
    policy = load_policy(model_path, device, adapter=init_adapter)
    policy = policy if init_adapter else get_peft_model(policy, lora_config(lora))
    return h, rows, policy.eval()
