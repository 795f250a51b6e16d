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
    teacher_logprobs: list[float] | None = None  # on-policy distillation: the teacher's log-prob of each sampled id


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
    teacher_logp: list[float] | None = None  # [A] on-policy distillation: the teacher's log-probabilities
    old_logp: torch.Tensor | None = None  # [A] the policy's log-probabilities before the update
    behaviour_logp: torch.Tensor | None = None  # [A] what the update's ratio is against (``behaviour``)
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
                               engine_logp=list(engine[:n]) if engine is not None else None,
                               teacher_logp=list(x.teacher_logprobs[:n]) if x.teacher_logprobs is not None else None))
    return rows


def acting(rows: list[Experience]) -> list[Experience]:
    """The rows with at least one action: what the policy trains on."""
    return [r for r in rows if r.actions]


def behaviour(rows: list[Experience], h: dict[str, Any]) -> None:
    """Each row's ``behaviour_logp``, what the update's ratio is against (``h["old_logprobs"]``): the policy's
    recomputed log-probabilities, or the engine's sampling ones (one step off-policy: the policy that sampled is
    the adapter before the one trained)."""
    for r in rows:
        if h["old_logprobs"] == "policy":
            r.behaviour_logp = r.old_logp
        elif r.engine_logp is None:
            raise ValueError("old_logprobs = \"sampled\" needs the engine's sampling log-probabilities, and a rollout "
                             "has none (its engine gives none, e.g. openai or reference): sample with hf or vllm, or "
                             "use old_logprobs = \"policy\"")
        else:
            r.behaviour_logp = torch.tensor(r.engine_logp, device=r.old_logp.device, dtype=r.old_logp.dtype)


def logprob_gap(rows: list[Experience]) -> float | None:
    """Mean absolute difference, per token, between the recomputed old log-probabilities and the engine's
    sampling ones (on-policy: their numerical agreement; one step off-policy: also the policy's lag); None when
    no rollout carried them."""
    gaps = [(r.old_logp - torch.tensor(r.engine_logp, device=r.old_logp.device)).abs()
            for r in rows if r.engine_logp is not None]
    return float(torch.cat(gaps).mean()) if gaps else None


def prompts(rows: list[Experience], share: bool = True) -> list[list[int]]:
    """The rows' indices grouped by their prompt's token ids, in order of first appearance; each row alone without
    ``share``."""
    if not share:
        return [[i] for i in range(len(rows))]
    by: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(tuple(r.ids[: r.start]), []).append(i)
    return list(by.values())


def packed_length(rows: list[Experience]) -> int:
    """Tokens of one sequence holding ``rows`` (one prompt's): the prompt once, then every completion."""
    return rows[0].start + sum(len(r.ids) - r.start for r in rows)


def packed_batch(rows: list[Experience], pad_id: int, share: bool = True):
    """The rows as one batch of sequences: each prompt's rows (``prompts``; each row alone without ``share``) as one
    sequence, the prompt then every completion, right-padded. Returns the ids, the positions (a completion's
    count on from its prompt's end), the attention mask ``[sequences, 1, width, width]`` (a completion sees the
    prompt and its own earlier tokens; padding sees itself), and per row the (sequence, position) of the hidden
    state that predicts each of its actions: the prompt's last token, then its own completion tokens."""
    groups = prompts(rows, share)
    width = max(packed_length([rows[i] for i in g]) for g in groups)
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(groups), width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(groups), 1, 1, 1)
    where: list[tuple[int, list[int]]] = [(0, [])] * len(rows)
    for b, g in enumerate(groups):
        p = rows[g[0]].start
        if p == 0:
            raise ValueError("a rollout has an empty prompt: no token predicts its completion's first token")
        ids[b, :p] = torch.tensor(rows[g[0]].ids[:p])
        positions[b, :p] = torch.arange(p)
        mask[b, 0, :p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
        lo = p
        for i in g:
            c = rows[i].ids[p:]
            hi = lo + len(c)
            ids[b, lo:hi] = torch.tensor(c, dtype=torch.long)
            positions[b, lo:hi] = p + torch.arange(len(c))
            mask[b, 0, lo:hi, :p] = True
            mask[b, 0, lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
            where[i] = (b, [p - 1] + list(range(lo, lo + rows[i].actions - 1)))
            lo = hi
    return ids, positions, mask, where


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
                   entropy: bool = False, chunk: int = 1024, share: bool = True):
    """One forward pass over ``rows``: for each completion token, its log-probability given what precedes it (the
    logits divided by the sampling temperature, as the rollouts were sampled), the entropy there (``entropy``),
    and the last hidden state that predicted it; ``[b, actions]`` with the mask. Rows of one prompt read it once
    (``packed_batch``; ``share``). The output layer runs on the completion positions only (the prompt's logits are
    never needed), ``chunk`` tokens at a time (``chosen_logprobs``)."""
    device = next(model.parameters()).device
    ids, positions, attn, where = packed_batch(rows, pad_id, share)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=ids.to(device), attention_mask=attn.to(device),
                                position_ids=positions.to(device)).last_hidden_state
    seq = torch.tensor([b for b, at in where for _ in at], dtype=torch.long, device=device)
    pos = torch.tensor([p for _, at in where for p in at], dtype=torch.long, device=device)
    targets = torch.tensor([t for r in rows for t in r.ids[r.start: r.start + r.actions]], dtype=torch.long,
                           device=device)
    flat_h = hidden[seq, pos]  # [actions of every row, hidden], row by row
    mask = action_mask(rows, device)
    real = mask.bool()
    flat_logp, flat_ent = chosen_logprobs(base.get_output_embeddings(), flat_h, targets, temperature, chunk,
                                          entropy)
    logp = torch.zeros(mask.shape, device=device).masked_scatter(real, flat_logp)
    ent = torch.zeros(mask.shape, device=device).masked_scatter(real, flat_ent) if entropy else None
    h = flat_h.new_zeros(mask.shape + flat_h.shape[-1:]).masked_scatter(real[..., None], flat_h)
    return logp, ent, h, mask


def chosen_logprobs(head, hidden, targets, temperature: float = 1.0, chunk: int = 1024, entropy: bool = False):
    """``log p(targets[i] | hidden[i])`` for ``[tokens, hidden]`` states under the output layer ``head`` at
    ``temperature``, and the entropy of each distribution (``entropy``; else None): the vocabulary-wide
    log-softmax (float32) of ``chunk`` tokens at a time, never the whole ``[tokens, vocabulary]``. With gradients,
    each chunk's logits are recomputed in the backward pass instead of kept (activation checkpointing) when there
    are several chunks, so memory holds one chunk's logits at a time."""
    def piece(h, t):
        logits = head(h).float() / temperature
        lse = torch.logsumexp(logits, -1)
        lp = logits.gather(-1, t[:, None]).squeeze(-1) - lse
        ent = lse - (logits.softmax(-1) * logits).sum(-1) if entropy else lp.new_zeros(())
        return lp, ent

    chunk = max(1, int(chunk))
    several = hidden.shape[0] > chunk  # one chunk: nothing to save by recomputing it
    outs = []
    for i in range(0, hidden.shape[0], chunk):
        h, t = hidden[i:i + chunk], targets[i:i + chunk]
        if several and torch.is_grad_enabled() and h.requires_grad:
            from torch.utils.checkpoint import checkpoint

            outs.append(checkpoint(piece, h, t, use_reentrant=False))
        else:
            outs.append(piece(h, t))
    if not outs:
        return hidden.new_zeros(0), hidden.new_zeros(0) if entropy else None
    logp = torch.cat([o[0] for o in outs])
    return logp, torch.cat([o[1] for o in outs]) if entropy else None


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


def forward_rows(model, rows: list[Experience], pad_id: int, h: dict[str, Any], precision=None):
    """Per row, without gradients: (log-probabilities, entropy, hidden states) of its completion tokens, float32.
    Rows go about ``h["batch_size"]`` at a time, in ``precision`` (autocast): each prompt's rows together, reading
    it once (``h["share_prompts"]``), shortest first (less padding)."""
    import contextlib

    temperature, batch_size, chunk = float(h["temperature"]), int(h["batch_size"]), int(h["logprob_chunk"])
    share = bool(h.get("share_prompts", True))
    units = sorted(prompts(rows, share), key=lambda u: packed_length([rows[i] for i in u]))
    batches: list[list[int]] = []
    for u in units:
        if batches and len(batches[-1]) + len(u) <= batch_size:
            batches[-1] += u
        else:
            batches.append(list(u))
    out: list = [None] * len(rows)
    with torch.no_grad(), (precision.autocast() if precision else contextlib.nullcontext()):
        for index in batches:
            chunk_rows = [rows[i] for i in index]
            logp, ent, hid, _ = action_forward(model, chunk_rows, pad_id, temperature, entropy=True, chunk=chunk,
                                               share=share)
            for j, (i, r) in enumerate(zip(index, chunk_rows)):
                out[i] = (logp[j, : r.actions].float(), ent[j, : r.actions].float(), hid[j, : r.actions].float())
    return out


def shares_in_updates(h: dict[str, Any]) -> bool:
    """Whether an update's passes read each prompt once: its minibatches hold whole groups, prompts shared."""
    return bool(h["share_prompts"]) and h["minibatches"] == "groups"


def minibatching(rows: list[Experience], h: dict[str, Any], step, weight=lambda r: 1.0) -> dict[str, Any]:
    """``fit``'s examples, settings, step, size and weight for ``h["minibatches"]``: the rollouts one by one, or
    each prompt's rollouts as one example, ``batch_size // n`` of them per minibatch (n: the usual group size;
    at least one group), their size the tokens of one sequence holding them (``shares_in_updates``)."""
    if h["minibatches"] == "rollouts":
        return dict(examples=rows, h=h, step=step, size=lambda r: len(r.ids), weight=weight)
    groups = [[rows[i] for i in g] for g in prompts(rows)]
    sizes = [len(g) for g in groups]
    n = max(set(sizes), key=sizes.count)
    share = shares_in_updates(h)
    return dict(examples=groups, h=dict(h, batch_size=max(1, int(h["batch_size"]) // n)),
                step=lambda batch: step([r for g in batch for r in g]), size=lambda g: read_tokens(g, share),
                weight=lambda g: sum(weight(r) for r in g))


def separate_reference(policy, init_adapter: str | None, reference_adapter: str | None) -> bool:
    """Whether the reference's log-probabilities take their own forward pass: not when the reference is the adapter
    continued, nor when it is the base model and the adapter a fresh LoRA that changes nothing yet (every B = 0)."""
    if reference_adapter is not None:
        return reference_adapter != init_adapter
    return init_adapter is not None or any(bool(p.any()) for n, p in policy.named_parameters() if "lora_B" in n)


def read_tokens(rows: list[Experience], share: bool = True) -> int:
    """Tokens a pass over ``rows`` reads: each prompt once with ``share``, else every rollout whole."""
    return sum(packed_length([rows[i] for i in g]) for g in prompts(rows, share))


def forward_tokens(rows: list[Experience], passes: int, share: bool = True) -> float:
    """Tokens read by ``passes`` forward passes over ``rows`` (what a training's model FLOPs count)."""
    return float(passes * read_tokens(rows, share))


def reference_logprobs(policy, rows, pad_id: int, h: dict[str, Any], init_adapter: str | None,
                       reference_adapter: str | None, current: list, precision=None):
    """Log-probabilities under the reference policy: the start adapter (``reference_adapter``, loaded beside the
    trained one and removed after), or the base model with the adapter disabled when there is none. When the
    reference is the adapter being continued (the first iteration), or the base model under a fresh LoRA that is
    still a no-op, they are the current ones."""
    if not separate_reference(policy, init_adapter, reference_adapter):
        return [c[0] for c in current]
    if reference_adapter is None:
        with policy.disable_adapter():
            return [c[0] for c in forward_rows(policy, rows, pad_id, h, precision)]
    policy.load_adapter(reference_adapter, adapter_name="reference", is_trainable=False)
    policy.set_adapter("reference")
    try:
        return [c[0] for c in forward_rows(policy, rows, pad_id, h, precision)]
    finally:
        policy.set_adapter("default")  # trainable again
        policy.delete_adapter("reference")


def prepare(model_path: str, rollouts: list[Rollout], kind: type, settings: dict[str, Any],
            seed: int, device: str, init_adapter: str | None, lora: dict[str, Any], tokenizer, dtype: str = "auto"):
    """The settings (``kind``'s config: its defaults under ``settings``), the rollouts as rows (every one: see
    ``acting``), the policy with a trainable adapter (``init_adapter`` continued, or a fresh LoRA) in eval mode,
    and the precision it computes in (``dtype`` resolved on ``device``): what an RL iteration starts from."""
    from peft import get_peft_model
    from transformers import set_seed

    from schoolroom.training.common import checkpointing, hyper, load_policy, lora_config, resolve

    set_seed(seed)
    h = hyper(settings, kind)
    rows = encode_rollouts(tokenizer, rollouts, int(h["max_length"]))
    if not acting(rows):
        raise ValueError("no rollout with a completion to train on")
    precision = resolve(dtype, device)
    policy = load_policy(model_path, device, adapter=init_adapter, precision=precision)
    policy = policy if init_adapter else get_peft_model(policy, lora_config(lora))
    checkpointing(policy, h, device)
    return h, rows, policy.eval(), precision
