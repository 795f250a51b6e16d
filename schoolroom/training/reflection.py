"""SFT with the self-reflection loss of tailored learning (tailored-learning.md; the authors' code:
Raibows/Learn-to-Reason, ``trainer.py`` ``compute_cl_loss``).

    loss = SFT loss on the correct rationale
           + weight * max(0, d(anchor, positive) - d(anchor, negative) + margin),   d = 1 - cos

``anchor = "rationale"`` (the authors' code, the default): the anchor is the correct rationale trained on, the
positive a *different* correct rationale of the same question, the negative the student's own wrong
solution; all three are read after the same question prompt, and an example without a second correct
rationale gets no reflection term (only the SFT loss). ``anchor = "question"`` (a departure): the anchor is the
question prompt itself, the positive the rationale, the negative the wrong solution. Representations are
the last layer's hidden states at the rationale's last token, its EOS (``pool = "last"``, the authors'
default) or their mean over the rationale's tokens (``pool = "mean"``). The authors' margin is 1.0 and
weight 0.5. With weight 0 this is plain SFT (the paper's ablation). The SFT loss is on the rationale's tokens
only (the authors also weight the prompt's tokens 0.1). A small training loop of its own: TRL's collators
know nothing of a third sequence.
"""

from __future__ import annotations

import os
import time
from typing import Any

from schoolroom.training.common import checkpointing, fit, hyper, load_policy, lora_config, mean_of, resolve
from schoolroom.training.settings import ReflectionConfig


def cosine_distance(x, y):
    import torch.nn.functional as F

    return 1.0 - F.cosine_similarity(x, y, dim=-1)


def reflection_term(anchor, positive, negative, margin: float):
    """Mean triplet-margin loss with cosine distance over a batch of representations ``[B, H]``."""
    import torch

    return torch.clamp(cosine_distance(anchor, positive) - cosine_distance(anchor, negative) + margin, min=0).mean()


def _encode(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    ids = (p + c)[:max_length]
    return ids, min(len(p), len(ids) - 1)


def _batch(tokenizer, rows: list[tuple[list[int], int]], device):
    """Right-padded ids, attention mask, labels (completion only), and prompt / completion masks for pooling."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), width))
    for i, (seq, n_prompt) in enumerate(rows):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        prompt_mask[i, :n_prompt] = 1
    completion_mask = attn.float() - prompt_mask
    labels = ids.masked_fill(completion_mask == 0, -100)
    return [t.to(device) for t in (ids, attn, labels, prompt_mask, completion_mask)]


ANCHORS, POOLS = ("rationale", "question"), ("last", "mean")


def _pool(hidden, mask, how: str = "last"):
    """``[B, H]``: the hidden state at the mask's last position (``last``) or the mean over it (``mean``)."""
    import torch

    if how == "mean":
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).amax(1).long()
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _read(model, tokenizer, prompts: list[str], texts: list[str], max_length: int, pool: str):
    """Pooled last-layer states of each text read after its prompt."""
    enc = _batch(tokenizer, [_encode(tokenizer, p, t, max_length) for p, t in zip(prompts, texts)],
                 next(model.parameters()).device)
    hidden = model(input_ids=enc[0], attention_mask=enc[1], output_hidden_states=True).hidden_states[-1]
    return _pool(hidden, enc[4], pool)


def reflection_loss(model, tokenizer, batch: list[dict[str, str]], weight: float, margin: float, max_length: int,
                    anchor: str = "rationale", pool: str = "last"):
    """(total loss, sft loss, reflection term) for a batch of ``{"prompt", "completion", "negative"?,
    "positive"?}`` (``positive``: another correct rationale of the question, for ``anchor = "rationale"``)."""
    import torch

    if anchor not in ANCHORS or pool not in POOLS:
        raise ValueError(f"anchor is {' or '.join(ANCHORS)} and pool {' or '.join(POOLS)}, not {anchor!r}, {pool!r}")
    device = next(model.parameters()).device
    pos = _batch(tokenizer, [_encode(tokenizer, x["prompt"], x["completion"], max_length) for x in batch], device)
    out = model(input_ids=pos[0], attention_mask=pos[1], labels=pos[2], output_hidden_states=weight > 0)
    sft = out.loss
    term = torch.zeros((), device=device)
    rows = [i for i, x in enumerate(batch) if x.get("negative") and (anchor == "question" or x.get("positive"))]
    if weight > 0 and rows:
        h = out.hidden_states[-1][rows]
        own = _pool(h, pos[4][rows], pool)  # the rationale trained on
        prompts = [batch[i]["prompt"] for i in rows]
        if anchor == "question":
            a, p = _pool(h, pos[3][rows], pool), own
            n = _read(model, tokenizer, prompts, [batch[i]["negative"] for i in rows], max_length, pool)
        else:
            both = _read(model, tokenizer, prompts * 2, [batch[i]["positive"] for i in rows] +
                         [batch[i]["negative"] for i in rows], max_length, pool)
            a, p, n = own, both[: len(rows)], both[len(rows):]
        term = reflection_term(a, p, n, margin)
    return sft + weight * term, sft, term


def train_reflection(model_path: str, examples: list[dict[str, str]], out_dir: str, lora: dict[str, Any] = {},
                     settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu",
                     init_adapter: str | None = None, tokenizer=None, dtype: str = "auto") -> dict[str, float]:
    """Train a LoRA adapter on ``examples`` (``{"prompt", "completion", "negative", "positive"}``; negative and
    positive may be empty).

    Settings beside the usual ones: ``reflection_weight`` (lambda, default 0.5), ``margin`` (default 1.0),
    ``anchor`` (rationale | question) and ``pool`` (last | mean).
    """
    from peft import get_peft_model
    from transformers import set_seed

    if not examples:
        raise ValueError("no examples to train on")
    set_seed(seed)
    h = hyper(settings, ReflectionConfig)
    weight, margin, anchor, pool = float(h["reflection_weight"]), float(h["margin"]), h["anchor"], h["pool"]
    if anchor not in ANCHORS or pool not in POOLS:
        raise ValueError(f"anchor is {' or '.join(ANCHORS)} and pool {' or '.join(POOLS)}, not {anchor!r}, {pool!r}")
    precision = resolve(dtype, device)
    model = load_policy(model_path, device, adapter=init_adapter, precision=precision)
    if not init_adapter:
        model = get_peft_model(model, lora_config(lora))

    def step(batch):
        loss, sft, term = reflection_loss(model, tokenizer, batch, weight, margin, int(h["max_length"]), anchor, pool)
        return loss, {"sft": float(sft), "term": float(term)}

    t0 = time.perf_counter()
    checkpointing(model, h, device)
    logs = fit(model, examples, step, h, seed, precision=precision)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    return {"train_loss": mean_of(logs, "loss"), "sft_loss": mean_of(logs, "sft"),
            "reflection_term": mean_of(logs, "term"), "first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
            "first_reflection_term": logs[0]["term"], "last_reflection_term": logs[-1]["term"],
            "steps": float(len(logs)), "examples": float(len(examples)),
            "with_negative": float(sum(bool(x.get("negative")) for x in examples)),
            "with_triplet": float(sum(bool(x.get("negative")) and (anchor == "question" or bool(x.get("positive")))
                                      for x in examples)),
            "seconds": time.perf_counter() - t0, "reflection_weight": weight, "margin": margin} | precision.metrics()
