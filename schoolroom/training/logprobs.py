"""Log-probabilities of completions under a policy: the DPO margin, and scoring."""

from __future__ import annotations


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of log p(completion tokens | prompt) under ``model``."""
    import torch

    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c], device=model.device)
    with torch.inference_mode():
        logits = model(ids).logits[0, len(p) - 1 : -1].float()
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(c, device=model.device)[:, None]).sum())


def preference_margin(model, tokenizer, pairs: list[dict[str, str]]) -> float:
    """Mean over pairs of log p(chosen) - log p(rejected)."""
    total = 0.0
    for x in pairs:
        total += completion_logprob(model, tokenizer, x["prompt"], x["chosen"])
        total -= completion_logprob(model, tokenizer, x["prompt"], x["rejected"])
    return total / max(1, len(pairs))
