"""SFT with the self-reflection loss of tailored learning (tailored-learning.md).

    loss = SFT loss on the correct rationale
           + weight * max(0, d(q, r+) - d(q, r-) + margin)

q is the student's representation of the problem (its last hidden states, mean-pooled over the
prompt tokens), r+ of a correct rationale and r- of its own wrong solution (mean-pooled over the
rationale tokens, each read after the same prompt); d is the cosine distance 1 - cos. The term
pulls the problem's representation toward the correct rationale and away from the wrong one.
With weight 0 this is plain SFT (the paper's ablation). A small training loop of its own: TRL's
collators know nothing of a third sequence.
"""

from __future__ import annotations

import os
import time
from typing import Any

from schoolroom.training.common import fit, hyper, load_policy, lora_config, mean_of


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


def _pool(hidden, mask):
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def reflection_loss(model, tokenizer, batch: list[dict[str, str]], weight: float, margin: float, max_length: int):
    """(total loss, sft loss, reflection term) for a batch of ``{"prompt", "completion", "negative"?}``."""
    import torch

    device = next(model.parameters()).device
    pos = _batch(tokenizer, [_encode(tokenizer, x["prompt"], x["completion"], max_length) for x in batch], device)
    out = model(input_ids=pos[0], attention_mask=pos[1], labels=pos[2], output_hidden_states=weight > 0)
    sft = out.loss
    term = torch.zeros((), device=device)
    with_neg = [i for i, x in enumerate(batch) if x.get("negative")]
    if weight > 0 and with_neg:
        h = out.hidden_states[-1][with_neg]
        anchor, positive = _pool(h, pos[3][with_neg]), _pool(h, pos[4][with_neg])
        neg = _batch(tokenizer, [_encode(tokenizer, batch[i]["prompt"], batch[i]["negative"], max_length)
                                 for i in with_neg], device)
        hn = model(input_ids=neg[0], attention_mask=neg[1], output_hidden_states=True).hidden_states[-1]
        term = reflection_term(anchor, positive, _pool(hn, neg[4]), margin)
    return sft + weight * term, sft, term


def train_reflection(model_path: str, examples: list[dict[str, str]], out_dir: str, lora: dict[str, Any] = {},
                     settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu",
                     init_adapter: str | None = None, tokenizer=None) -> dict[str, float]:
    """Train a LoRA adapter on ``examples`` (``{"prompt", "completion", "negative"}``; negative may be empty).

    Settings beside the usual ones: ``reflection_weight`` (lambda, default 0.5) and ``margin`` (default 0.2).
    """
    from peft import get_peft_model
    from transformers import set_seed

    if not examples:
        raise ValueError("no examples to train on")
    set_seed(seed)
    h = hyper(settings)
    weight, margin = float(h.get("reflection_weight", 0.5)), float(h.get("margin", 0.2))
    model = load_policy(model_path, device, adapter=init_adapter)
    if not init_adapter:
        model = get_peft_model(model, lora_config(lora))

    def step(batch):
        loss, sft, term = reflection_loss(model, tokenizer, batch, weight, margin, int(h["max_length"]))
        return loss, {"sft": float(sft), "term": float(term)}

    t0 = time.perf_counter()
    logs = fit(model, examples, step, h, seed)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    return {"train_loss": mean_of(logs, "loss"), "sft_loss": mean_of(logs, "sft"),
            "reflection_term": mean_of(logs, "term"), "first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
            "first_reflection_term": logs[0]["term"], "last_reflection_term": logs[-1]["term"],
            "steps": float(len(logs)), "examples": float(len(examples)), "with_negative": float(sum(bool(x.get("negative"))
            for x in examples)), "seconds": time.perf_counter() - t0, "reflection_weight": weight, "margin": margin}
