"""Reward models: a scalar head on a causal-LM backbone with LoRA, trained with binary cross-entropy.

ORM and PRM are one model, a token classifier (``AutoModelForTokenClassification``, one label): the
backbone's last hidden state at a token, through a linear head, is a logit, and sigmoid(logit) is the
probability that the solution is correct (ORM) or still correct after a step (PRM).

- ORM: read at the last token of the whole solution (the end-of-turn token appended to it).
- PRM: read at a separator token placed after each step, the Math-Shepherd and Qwen2.5-Math-PRM way
  (``step 1<sep>\\nstep 2<sep>\\n...``). The separator is one token of the backbone's vocabulary.

Scoring and training compute the token prefixes many examples share once where that saves most of the work
(``shared_logits``: a problem's PRM800K solutions share all but their last step). The loss is measured on the same
training examples before and after training, beside the base rate (``loss_before``, ``loss_after``,
``loss_base_rate``); the first and last batch's losses are of different examples and compare nothing.

A trained reward model is one peft folder: the LoRA weights and the head (``modules_to_save``), plus
``reward_model.json`` with its kind, separator and backbone; outside the framework
``PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base, num_labels=1), path)`` loads it.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, NamedTuple

from schoolroom.training.common import checkpointing, fit, hyper, lora_config, mean_of, resolve
from schoolroom.training.settings import RewardModelConfig

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
                      lora: dict[str, Any] | None = None, pad_token_id: int | None = None, dropout: float = 0.0):
    """The backbone with its scalar head: a trained reward model from ``adapter``, or a fresh LoRA + head.

    ``dropout``: on the hidden state the head reads, in training. transformers' token classifier defaults to 0.1;
    the sequence classifier TRL's reward models use has none, and none is the default here: with it, each training
    step's loss carried noise that grew with the head's weights (the hidden state's L2 norm is about 50)."""
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()  # "score.weight newly initialized": the head is ours to train
    try:
        from schoolroom.models import attention

        model = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32,
                                                                attn_implementation=attention())
    finally:
        logging.set_verbosity(level)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    if isinstance(getattr(model, "dropout", None), torch.nn.Dropout):
        model.dropout.p = dropout
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


class _Node(NamedTuple):
    tokens: list[int]  # its own tokens, after its parent's
    reads: list[tuple[int, int]]  # (flat read index, offset in tokens)
    parent: int  # -1: the root's child
    start: int  # its parent's length
    children: bool


def prefix_tree(rows: list[tuple[list[int], list[int]]]) -> tuple[list[list[_Node]], list[tuple[int, int]]]:
    """The rows' radix tree over their token ids, level by level, with each read's node and offset (its key: two
    reads with the same key read the same tokens). Tokens after a row's last position are left out."""
    rows = [(list(ids[: max(pos) + 1]), list(pos)) if pos else ([], []) for ids, pos in rows]
    offsets, n = [], 0
    for _, pos in rows:
        offsets.append(n)
        n += len(pos)
    keys: list[tuple[int, int]] = [(-1, -1)] * n
    levels: list[list[_Node]] = []
    index = 0
    frontier = [([r for r, (ids, _) in enumerate(rows) if ids], 0, -1)]  # (rows through a node, its end, its index)
    while frontier:
        level, following = [], []
        for members, depth, parent in frontier:
            groups: dict[int, list[int]] = {}
            for r in members:
                if len(rows[r][0]) > depth:
                    groups.setdefault(rows[r][0][depth], []).append(r)
            for group in groups.values():
                end = depth + 1
                while len({rows[r][0][end] for r in group if len(rows[r][0]) > end}) == 1:
                    end += 1
                reads = [(offsets[r] + j, p - depth) for r in group for j, p in enumerate(rows[r][1])
                         if depth <= p < end]
                for f, o in reads:
                    keys[f] = (index, o)
                rest = [r for r in group if len(rows[r][0]) > end]
                longest = max(group, key=lambda r: len(rows[r][0]))
                level.append(_Node(rows[longest][0][depth:end], reads, parent, depth, bool(rest)))
                if rest:
                    following.append((rest, end, index))
                index += 1
        levels.append(level)
        frontier = following
    return levels, keys


def _segments(levels: list[list[_Node]], size: int) -> list[list[int]]:
    """The tree's nodes (global indices) packed into segments of about ``size`` tokens, depth first: each segment
    holds whole nodes after all their ancestors (repeated in each segment that needs them)."""
    nodes = [x for level in levels for x in level]
    kids: dict[int, list[int]] = {}
    for i, x in enumerate(nodes):
        kids.setdefault(x.parent, []).append(i)
    out: list[list[int]] = []
    current: list[int] = []
    inside: set[int] = set()
    used = 0
    stack = list(reversed(kids.get(-1, [])))
    while stack:
        i = stack.pop()
        chain = []
        j = i
        while j != -1 and j not in inside:
            chain.append(j)
            j = nodes[j].parent
        cost = sum(len(nodes[k].tokens) for k in chain)
        if current and used + cost > size:
            out.append(current)
            current, inside, used = [], set(), 0
            chain, j = [], i
            while j != -1:
                chain.append(j)
                j = nodes[j].parent
            cost = sum(len(nodes[k].tokens) for k in chain)
        current += reversed(chain)
        inside.update(chain)
        used += cost
        stack += reversed(kids.get(i, []))
    if current:
        out.append(current)
    return out


def shared_logits(model, tokenizer, rows: list[tuple[list[int], list[int]]], batch_size: int = 16,
                  share_below: float = 1 / 3, segment: int = 1024):
    """What ``logits_at`` returns (the head's logit at each row's positions, one flat tensor in row order, then
    position order), computing the token prefixes the rows share once where that saves most of the work, and the
    key of each read (``prefix_tree``: two reads with the same key read the same tokens, hence the same logit).

    When the tree's distinct tokens are at most ``share_below`` of the rows' tokens, the tree is packed into
    sequences of about ``segment`` tokens (whole nodes after their ancestors; a longer path alone) and each is one
    forward pass with a tree attention mask (its cost grows with the sequence's length squared): a token sees its ancestors' tokens and its own node's earlier ones, at its own position.
    PRM800K's solutions of one problem share all but their last step: scoring every rated step of a problem reads
    its about 1,600 distinct tokens instead of its solutions' about 19,000, in a few passes. Otherwise the
    rows go whole in plain padded batches of ``batch_size``. Gradients flow either way.
    """
    import torch

    levels, keys = prefix_tree(rows)
    device = next(model.parameters()).device
    if not keys:
        return torch.zeros(0, device=device), keys
    nodes = [x for level in levels for x in level]
    distinct = sum(len(x.tokens) for x in nodes)
    total = sum(max(pos) + 1 for _, pos in rows if pos)
    if distinct > share_below * total:
        trimmed = [(ids[: max(pos) + 1], pos) for ids, pos in rows if pos]
        return torch.cat([logits_at(model, tokenizer, trimmed[i:i + batch_size])
                          for i in range(0, len(trimmed), batch_size)]), keys
    packs = sorted(_segments(levels, segment), key=lambda p: sum(len(nodes[i].tokens) for i in p))
    where: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    batch: list[list[int]] = []
    done: set[int] = set()
    for k, pack in enumerate(packs):
        batch.append(pack)
        width = max(sum(len(nodes[i].tokens) for i in p) for p in batch)
        if k + 1 < len(packs) and (len(batch) + 1) * max(width, sum(len(nodes[i].tokens) for i in packs[k + 1])) \
                <= segment and len(batch) < batch_size:
            continue  # room for the next (longer) pack in this pass
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.eye(width, dtype=torch.bool).repeat(len(batch), 1, 1, 1)  # padding sees itself: no NaN
        flat = []
        for b, p in enumerate(batch):
            at: dict[int, tuple[int, int]] = {}
            cursor = 0
            for i in p:
                x = nodes[i]
                lo, hi = cursor, cursor + len(x.tokens)
                at[i] = (lo, hi)
                ids[b, lo:hi] = torch.tensor(x.tokens)
                positions[b, lo:hi] = x.start + torch.arange(len(x.tokens))
                mask[b, 0, lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
                j = x.parent
                while j != -1:
                    mask[b, 0, lo:hi, at[j][0]:at[j][1]] = True
                    j = nodes[j].parent
                if i not in done:  # an ancestor repeated in a later pack was read in its first
                    flat += [(f, b, lo + o) for f, o in x.reads]
                    done.add(i)
                cursor = hi
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    position_ids=positions.to(device)).logits[..., 0]
        if flat:
            where.append(torch.tensor([f for f, _, _ in flat]))
            values.append(out[torch.tensor([b for _, b, _ in flat], device=out.device),
                              torch.tensor([o for _, _, o in flat], device=out.device)])
        batch = []
    flat_values = torch.cat(values)
    return flat_values[torch.argsort(torch.cat(where)).to(flat_values.device)], keys


def train_reward_model(model_path: str, examples: list[dict[str, Any]], out_dir: str, kind: str,
                       lora: dict[str, Any] = {}, settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu",
                       init_adapter: str | None = None, tokenizer=None, base_model: str = "", dtype: str = "auto"
                       ) -> dict[str, float]:
    """Train an ORM or PRM on ``examples``: ``{"prompt", "text", "steps", "labels"}`` with ``labels`` one per step
    (PRM; None = not labelled, left out of the loss) or one for the whole solution (ORM), each in [0, 1].

    Settings beside the usual ones: ``separator`` (PRM; default: the first of ``SEPARATORS`` the tokenizer has);
    ``batch_by``: ``example`` (a batch is ``batch_size`` examples) or ``problem`` (all the examples of
    ``batch_size`` problems, i.e. of one prompt: the steps they share are computed once); ``loss_check``: how many
    units (examples or problems; default 32: the first batch and more, seeded) the loss is measured on before and
    after training; ``forward_batch``: sequences per forward pass (default 16); ``head_dropout`` (default 0.0; see
    ``load_reward_model``).

    Every batch is computed by ``shared_logits``: a position read twice in a batch (the same tokens up to it) is
    one term of the loss, with the mean of its labels. ``loss_before`` and ``loss_after`` are the loss on the same
    examples (the ``loss_check`` sample: the first batch, whose loss before its update the first step computes
    anyway, and more) before the first update and after the last, in eval mode, beside
    ``loss_base_rate``: the loss of always predicting their mean label, what a model that learned nothing about the
    examples scores. ``first_loss`` and ``last_loss`` are the first and the last batch's (other examples: not a
    comparison).
    """
    import torch
    from transformers import set_seed

    if kind not in KINDS:
        raise ValueError(f"reward model kind must be one of {', '.join(KINDS)}, not {kind!r}")
    set_seed(seed)
    h = hyper(settings, RewardModelConfig)
    batch_by = h["batch_by"]
    if batch_by not in ("example", "problem"):
        raise ValueError(f"batch_by is example or problem, not {batch_by!r}")
    sep = separator(tokenizer, h["separator"])
    rows = []
    for x in examples:
        ids, positions = encode(tokenizer, x, kind, sep, int(h["max_length"]))
        labelled = [(p, float(y)) for p, y in zip(positions, x["labels"]) if y is not None]
        if labelled:
            rows.append((x["prompt"], ids, [p for p, _ in labelled], [y for _, y in labelled]))
    if not rows:
        raise ValueError(f"no labelled {kind.upper()} example to train on")
    units: list[list[tuple]] = [[r] for r in rows]
    if batch_by == "problem":
        by_prompt: dict[str, list[tuple]] = {}
        for r in rows:
            by_prompt.setdefault(r[0], []).append(r)
        units = list(by_prompt.values())
    model = load_reward_model(model_path, device, adapter=init_adapter, trainable=True, lora=lora,
                              pad_token_id=tokenizer.pad_token_id, dropout=float(h["head_dropout"]))
    forward = int(h["forward_batch"])

    def read(batch: list[list[tuple]]):
        """(logits, labels), one per distinct position read in the batch."""
        flat = [r for unit in batch for r in unit]
        logits, keys = shared_logits(model, tokenizer, [(ids, pos) for _, ids, pos, _ in flat], forward)
        first: dict[tuple[int, int], int] = {}
        labels: dict[tuple[int, int], list[float]] = {}
        for i, (key, y) in enumerate(zip(keys, (y for *_, ys in flat for y in ys))):
            first.setdefault(key, i)
            labels.setdefault(key, []).append(y)
        index = torch.tensor(list(first.values()), device=logits.device)
        target = torch.tensor([sum(ys) / len(ys) for ys in labels.values()], device=logits.device)
        return logits[index], target

    size = int(h["batch_size"])
    wanted = min(len(units), max(size, int(h["loss_check"])))
    state: dict[str, Any] = {}

    def tally(logits, labels) -> list[float]:
        """(summed loss, right, labels) of one read."""
        return [float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")),
                float(((logits > 0) == (labels > 0.5)).sum()), float(len(labels)), float(labels.sum())]

    def measure(batches: list[list[list[tuple]]]) -> list[float]:
        """The tally of these units in eval mode."""
        model.eval()
        out = [0.0] * 4
        with torch.no_grad():
            for batch in batches:
                out = [x + y for x, y in zip(out, tally(*read(batch)))]
        return out

    def step(batch):
        logits, labels = read(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        right = ((logits > 0).float() == (labels > 0.5).float()).float().mean()
        if not state:  # before the first update: the check sample is this batch and more units, seeded
            state["first"] = batch
            taken = {id(u) for u in batch}
            rest = [u for u in units if id(u) not in taken]
            more = random.Random(f"{seed}:loss_check").sample(rest, min(len(rest), wanted - len(batch)))
            state["more"] = [more[i:i + size] for i in range(0, len(more), size)]
            # this batch's loss as computed is the loss before training unless dropout is live: a LoRA adapter
            # continued (its dropout acts once its B is not zero), or dropout on the head
            live = init_adapter or float(h["head_dropout"])
            state["before"] = [x + y for x, y in zip(measure([batch]) if live else tally(logits.detach(), labels),
                                                     measure(state["more"]))]
            model.train(True)
        return loss, {"accuracy": float(right)}

    t0 = time.perf_counter()
    precision = resolve(dtype, device)  # the forward passes under autocast; the backbone stays float32 (it scores)
    checkpointing(model, h, device)
    logs = fit(model, units, step, h, seed, precision=precision)
    after = measure([state["first"]] + state["more"])
    before = state["before"]
    checked = state["first"] + [u for b in state["more"] for u in b]
    mean = min(max(before[3] / before[2], 1e-6), 1 - 1e-6)
    base = -(mean * math.log(mean) + (1 - mean) * math.log(1 - mean))  # always predicting the mean label
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    Path(out_dir, INFO).write_text(json.dumps({"kind": kind, "separator": sep[0], "base_model": base_model}))
    labels = [y for *_, ys in rows for y in ys]
    return {"train_loss": mean_of(logs, "loss"), "first_loss": logs[0]["loss"], "last_loss": logs[-1]["loss"],
            "last_accuracy": logs[-1]["accuracy"], "steps": float(len(logs)), "examples": float(len(rows)),
            "labels": float(len(labels)), "positive_share": sum(y > 0.5 for y in labels) / len(labels),
            "loss_before": before[0] / before[2], "loss_after": after[0] / after[2], "loss_base_rate": base,
            "accuracy_before": before[1] / before[2], "accuracy_after": after[1] / after[2],
            "loss_check_examples": float(sum(len(u) for u in checked)), "loss_check_labels": before[2],
            "seconds": time.perf_counter() - t0} | precision.metrics()


def read_info(path: str) -> dict[str, str]:
    """What a reward-model folder says of itself (kind, separator, backbone); a clear error if it is not one."""
    info = Path(path, INFO)
    if not info.exists():
        raise ValueError(f"{path} is not a reward model (no {INFO}): train one with kind orm or prm")
    return json.loads(info.read_text())


def score(model, tokenizer, examples: list[dict[str, Any]], kind: str, sep: tuple[str, int], batch_size: int = 8,
          max_length: int = 1024) -> list[list[float]]:
    """Probabilities the reward model gives each example: one per step (PRM) or one (ORM). The prefixes the
    examples share (a problem's prompt; PRM800K's shared steps) are computed once (``shared_logits``)."""
    import torch

    encoded = [encode(tokenizer, x, kind, sep, max_length) for x in examples]
    with torch.inference_mode():
        logits, _ = shared_logits(model, tokenizer, encoded, batch_size)
    probs = torch.sigmoid(logits.float()).tolist()
    out: list[list[float]] = []
    for _, positions in encoded:
        out.append(probs[: len(positions)])
        probs = probs[len(positions):]
    return out
