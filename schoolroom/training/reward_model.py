"""Reward models: a scalar head on a causal-LM backbone with LoRA, trained with binary cross-entropy.

ORM and PRM are one model, a token classifier (``AutoModelForTokenClassification``, one label): the
backbone's last hidden state at a token, through a linear head, is a logit, and sigmoid(logit) is the
probability that the solution is correct (ORM) or still correct after a step (PRM).

- ORM: read at the last token of the whole solution (the end-of-turn token appended to it).
- PRM: read at a separator token placed after each step, the Math-Shepherd and Qwen2.5-Math-PRM way
  (``step 1<sep>\\nstep 2<sep>\\n...``). The separator is one token of the backbone's vocabulary.

A trained reward model is one peft folder: the LoRA weights and the head (``modules_to_save``), plus
``reward_model.json`` with its kind, separator and backbone; outside the framework
``PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base, num_labels=1), path)`` loads it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from schoolroom.training.common import fit, hyper, lora_config, mean_of

KINDS = ("orm", "prm")
# one-token step separators, by the PRM that made them known; the first the tokenizer has as one token is used
SEPARATORS = ("<extra_0>", " ки", "ки", "<file_sep>", "<|reserved_special_token_0|>")
INFO = "reward_model.json"


def separator(tokenizer, wanted: str | None = None) -> tuple[str, int]:
    """(separator text, its token id): ``wanted`` if given, else the first of ``SEPARATORS`` that is one token."""
    for s in ([wanted] if wanted else SEPARATORS):
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return s, ids[0]
    raise ValueError(f"no one-token step separator for this tokenizer (tried {', '.join(map(repr, [wanted] if wanted else SEPARATORS))}): "
                     "name one in the reward model's settings (separator = \"...\")")


def encode(tokenizer, example: dict[str, Any], kind: str, sep: tuple[str, int], max_length: int
           ) -> tuple[list[int], list[int]]:
    """(token ids, positions to read) for ``{"prompt", "steps"}`` (PRM: one position per step) or ``{"prompt",
    "text"}`` (ORM: the last token). Positions cut off by ``max_length`` are dropped."""
    ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    if kind == "orm":
        ids = (ids + tokenizer(example["text"], add_special_tokens=False)["input_ids"])[: max_length - 1]
        return ids + [tokenizer.eos_token_id], [len(ids)]
    text, sep_id = sep
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    positions = []
    for step in example["steps"]:
        ids = ids + tokenizer(step.replace(text, " ").strip(), add_special_tokens=False)["input_ids"] + [sep_id]
        positions.append(len(ids) - 1)
        ids = ids + newline
    ids = ids[:max_length]
    return ids, [p for p in positions if p < len(ids)]


def _batch(tokenizer, rows: list[list[int]], device):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
    return ids.to(device), attn.to(device)


def load_reward_model(model_path: str, device: str = "cpu", adapter: str | None = None, trainable: bool = False,
                      lora: dict[str, Any] | None = None, pad_token_id: int | None = None):
    """The backbone with its scalar head: a trained reward model from ``adapter``, or a fresh LoRA + head."""
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()  # "score.weight newly initialized": the head is ours to train
    try:
        model = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
    finally:
        logging.set_verbosity(level)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    else:
        model = get_peft_model(model, lora_config(lora or {}, task_type="TOKEN_CLS", modules_to_save=["score"]))
    return model.to(device)


def logits_at(model, tokenizer, rows: list[tuple[list[int], list[int]]]):
    """The head's logit at each row's positions, as one flat tensor (row order, then position order)."""
    import torch

    ids, attn = _batch(tokenizer, [r for r, _ in rows], next(model.parameters()).device)
    out = model(input_ids=ids, attention_mask=attn).logits[..., 0]
    index = [(i, p) for i, (_, positions) in enumerate(rows) for p in positions]
    if not index:
        return out.new_zeros(0)
    rows_i = torch.tensor([i for i, _ in index], device=out.device)
    cols = torch.tensor([p for _, p in index], device=out.device)
    return out[rows_i, cols]


def train_reward_model(model_path: str, examples: list[dict[str, Any]], out_dir: str, kind: str,
                       lora: dict[str, Any] = {}, settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu",
                       init_adapter: str | None = None, tokenizer=None, base_model: str = "") -> dict[str, float]:
    """Train an ORM or PRM on ``examples``: ``{"prompt", "text", "steps", "labels"}`` with ``labels`` one per step
    (PRM; None = not labelled, left out of the loss) or one for the whole solution (ORM), each in [0, 1].

    Settings beside the usual ones: ``separator`` (PRM; default: the first of ``SEPARATORS`` the tokenizer has).
    """
    import torch
    from transformers import set_seed

    if kind not in KINDS:
        raise ValueError(f"reward model kind must be one of {', '.join(KINDS)}, not {kind!r}")
    set_seed(seed)
    h = hyper(settings)
    sep = separator(tokenizer, h.get("separator"))
    rows = []
    for x in examples:
        ids, positions = encode(tokenizer, x, kind, sep, int(h["max_length"]))
        labelled = [(p, float(y)) for p, y in zip(positions, x["labels"]) if y is not None]
        if labelled:
            rows.append((ids, [p for p, _ in labelled], [y for _, y in labelled]))
    if not rows:
        raise ValueError(f"no labelled {kind.upper()} example to train on")
    model = load_reward_model(model_path, device, adapter=init_adapter, trainable=True, lora=lora,
                              pad_token_id=tokenizer.pad_token_id)

    def step(batch):
        logits = logits_at(model, tokenizer, [(ids, pos) for ids, pos, _ in batch])
        labels = torch.tensor([y for _, _, ys in batch for y in ys], device=logits.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        right = ((logits > 0).float() == (labels > 0.5).float()).float().mean()
        return loss, {"accuracy": float(right)}

    t0 = time.perf_counter()
    logs = fit(model, rows, step, h, seed)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    Path(out_dir, INFO).write_text(json.dumps({"kind": kind, "separator": sep[0], "base_model": base_model}))
    labels = [y for _, _, ys in rows for y in ys]
    return {"train_loss": mean_of(logs, "loss"), "first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
            "last_accuracy": logs[-1]["accuracy"], "steps": float(len(logs)), "examples": float(len(rows)),
            "labels": float(len(labels)), "positive_share": sum(y > 0.5 for y in labels) / len(labels),
            "seconds": time.perf_counter() - t0}


def read_info(path: str) -> dict[str, str]:
    """What a reward-model folder says of itself (kind, separator, backbone); a clear error if it is not one."""
    info = Path(path, INFO)
    if not info.exists():
        raise ValueError(f"{path} is not a reward model (no {INFO}): train one with kind orm or prm")
    return json.loads(info.read_text())


def score(model, tokenizer, examples: list[dict[str, Any]], kind: str, sep: tuple[str, int], batch_size: int = 8,
          max_length: int = 1024) -> list[list[float]]:
    """Probabilities the reward model gives each example: one per step (PRM) or one (ORM)."""
    import torch

    out: list[list[float]] = []
    encoded = [encode(tokenizer, x, kind, sep, max_length) for x in examples]
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            probs = torch.sigmoid(logits_at(model, tokenizer, chunk).float()).tolist()
            for _, positions in chunk:
                out.append(probs[: len(positions)])
                probs = probs[len(positions):]
    return out
