"""What SFT, DPO and the reflection loss share: loading the policy, LoRA settings, trainer arguments."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

from schoolroom.training.precision import Precision, resolve
from schoolroom.training.settings import LoRAConfig, SFTConfig


class TrainingDiverged(ValueError):
    """The loss (or the gradient norm) went NaN, infinite, or above ``max_loss``: training stopped at ``step``."""

    def __init__(self, step: int, what: str, value: float):
        self.step, self.what, self.value = step, what, value
        super().__init__(f"{what} {value:g} at step {step}")


def check_finite(step: int, h: dict[str, Any], **values: float | None) -> None:
    """Raise TrainingDiverged when a loss or gradient norm is not finite, or a loss is above ``h["max_loss"]``."""
    for what, v in values.items():
        if v is None:
            continue
        v = float(v)
        if not math.isfinite(v) or (what.endswith("loss") and v > float(h["max_loss"])):
            raise TrainingDiverged(step, what.replace("_", " "), v)


def lora_config(settings: dict[str, Any], task_type: str = "CAUSAL_LM", **extra):
    from peft import LoraConfig

    s = LoRAConfig.of(settings)
    for k, v in extra.items():  # the kind's own (a reward model's head trained in full) beside the config's
        s[k] = sorted(set(s[k] or []) | set(v)) if k == "modules_to_save" else v
    return LoraConfig(task_type=task_type, **s)


def hyper(settings: dict[str, Any], kind: type[SFTConfig] = SFTConfig) -> dict[str, Any]:
    """Every setting of ``kind`` (its config class), ``settings`` over its defaults; an unknown key raises."""
    return kind.of(settings)


def load_policy(model_path: str, device: str = "cpu", adapter: str | None = None, trainable: bool = True,
                precision: Precision | None = None):
    """The base model (in ``precision.weights``: bf16 on a GPU that has it, float32 on a CPU), with ``adapter``
    loaded (trainable, to continue it) when given."""
    import torch
    from transformers import AutoModelForCausalLM

    from schoolroom.models import attention

    weights = precision.weights if precision else "float32"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, weights), attn_implementation=attention())
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    return model.to(device)


def wants_checkpointing(h: dict[str, Any], device: str) -> bool:
    on = h.get("gradient_checkpointing")
    return device.startswith("cuda") if on is None else bool(on)


def checkpointing(model, h: dict[str, Any], device: str) -> bool:
    """Turn on gradient checkpointing when ``h["gradient_checkpointing"]`` says so (None: on a GPU only); whether
    it is on. Activations are recomputed in the backward pass instead of kept: memory for time."""
    on = wants_checkpointing(h, device)
    if on:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False
    return on


def trainer_args(cls, h: dict[str, Any], out_dir: str, seed: int, device: str, precision: Precision | None = None,
                 **extra):
    """A TRL config (SFTConfig, DPOConfig) for small LoRA runs: no checkpoints, no reports, CPU when asked, in
    ``precision`` (bf16 autocast where it is bf16; None: what ``dtype = "auto"`` resolves to)."""
    precision = precision or resolve("auto", device)
    kwargs = dict(output_dir=out_dir, per_device_train_batch_size=int(h["batch_size"]),
                  gradient_accumulation_steps=int(h["grad_accum"]), learning_rate=float(h["learning_rate"]),
                  num_train_epochs=float(h["epochs"]), max_steps=int(h["max_steps"]), warmup_steps=int(h["warmup_steps"]),
                  logging_steps=1, save_strategy="no", report_to=[], seed=seed, data_seed=seed,
                  gradient_checkpointing=wants_checkpointing(h, device),
                  bf16=precision.compute == "bfloat16", fp16=precision.compute == "float16", disable_tqdm=True, dataloader_num_workers=0,
                  logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (and stops the training), not hidden
                  max_length=int(h["max_length"]), lr_scheduler_type="linear",
                  max_grad_norm=float(h.get("max_grad_norm", 1.0)))
    if device == "cpu":
        kwargs["use_cpu"] = True  # bf16 on a CPU is autocast (faster than fp32 where the CPU has it natively)
    kwargs.update(extra)
    return cls(**kwargs)


def run_trainer(trainer, out_dir: str, h: dict[str, Any]) -> dict[str, float]:
    """Train, save only the policy's adapter in ``out_dir``, and return the final metrics; a NaN, infinite or
    exploding loss stops it (TrainingDiverged) before anything is saved."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the loss of every step is in the returned metrics, not on stdout
    trainer.add_callback(_Divergence(h))
    t = time.perf_counter()
    result = trainer.train()
    model = trainer.model
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, selected_adapters=["default"])
    logs = [x for x in trainer.state.log_history if "loss" in x]
    metrics = {"train_loss": float(result.training_loss), "steps": float(trainer.state.global_step),
               "seconds": time.perf_counter() - t}
    if logs:
        metrics["first_loss"] = float(logs[0]["loss"])
        metrics["last_loss"] = float(logs[-1]["loss"])
        for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"):
            vals = [x[key] for x in logs if key in x]
            if vals:
                metrics[f"last_{key.replace('/', '_')}"] = float(vals[-1])
    return metrics


def _Divergence(h: dict[str, Any]):
    """A TRL callback that stops training (TrainingDiverged) at the first logged step with a bad loss."""
    from transformers import TrainerCallback

    class Divergence(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kw):
            logs = logs or {}
            check_finite(state.global_step, h, loss=logs.get("loss"), gradient_norm=logs.get("grad_norm"))

    return Divergence()


def micro_batches(batch: list, size: Callable[[Any], int] | None, budget: int) -> list[list]:
    """``batch`` cut into micro-batches of at most ``budget`` padded tokens (rows x the longest row's ``size``),
    each sorted by length to cut padding; the whole batch as one when there is no budget (``budget <= 0``)."""
    if size is None or budget <= 0:
        return [batch]
    out: list[list] = []
    for x in sorted(batch, key=size):
        if out and (len(out[-1]) + 1) * size(x) <= budget:  # sorted: x is the longest so far
            out[-1].append(x)
        else:
            out.append([x])
    return out


def fit(model, examples: list, step: Callable[[list], tuple[Any, dict[str, float]]], h: dict[str, Any], seed: int,
        schedule: str = "linear", dropout: bool = True, precision: Precision | None = None,
        size: Callable[[Any], int] | None = None, weight: Callable[[Any], float] = lambda x: 1.0
        ) -> list[dict[str, float]]:
    """A small training loop for losses TRL has no trainer for (reflection, reward models, PPO, GRPO).

    Shuffled batches of ``h["batch_size"]`` examples for ``h["max_steps"]`` steps (or ``h["epochs"]`` passes),
    AdamW on the trainable parameters, gradients clipped at ``h["max_grad_norm"]`` (default 1.0), the learning rate
    decaying linearly to 0 (``schedule="linear"``) or ``"constant"``; ``dropout=False`` keeps dropout off (RL:
    the probabilities trained are the ones sampled). ``step(batch)`` returns the loss and the numbers to log;
    returns one log per step: ``{"loss": ..., **numbers}``. Forward passes run in ``precision`` (autocast).

    Gradient accumulation: with ``size`` (an example's tokens) and ``h["micro_tokens"]`` > 0, a batch is cut into
    micro-batches of at most that many padded tokens; each one's loss, which ``step`` gives as a mean over the
    micro-batch, is weighted by its share of the batch's ``weight`` (1 per example: a mean over examples; the
    actions of a rollout: a mean over tokens), so the summed gradient is the whole batch's.
    """
    import torch

    if not examples:
        raise ValueError("no examples to train on")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(h["learning_rate"]), weight_decay=0.0)
    bs = int(h["batch_size"])
    per_epoch = math.ceil(len(examples) / bs)
    steps = int(h["max_steps"]) if int(h["max_steps"]) > 0 else math.ceil(per_epoch * float(h["epochs"]))
    decay = (lambda s: max(0.0, 1 - s / max(1, steps))) if schedule == "linear" else (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    rng = random.Random(seed)
    order: list[int] = []
    logs = []
    cast = precision.autocast if precision else contextlib.nullcontext
    model.train()  # train mode (gradient checkpointing needs it) ...
    if not dropout:  # ... with dropout off: the same numbers as eval mode
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
    for _ in range(steps):
        if len(order) < bs:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order += more
        batch, order = [examples[i] for i in order[:bs]], order[bs:]
        opt.zero_grad()
        loss_sum, numbers = accumulate(batch, step, h, cast, size, weight, step_no=len(logs) + 1)
        norm = torch.nn.utils.clip_grad_norm_(params, float(h.get("max_grad_norm", 1.0)))
        check_finite(len(logs) + 1, h, gradient_norm=float(norm))
        opt.step()
        sched.step()
        logs.append({"loss": loss_sum, **numbers} | ({"tokens": float(sum(map(size, batch)))} if size else {}))
    model.eval()
    return logs


def accumulate(batch: list, step: Callable, h: dict[str, Any], cast=contextlib.nullcontext,
               size: Callable[[Any], int] | None = None, weight: Callable[[Any], float] = lambda x: 1.0,
               step_no: int = 1) -> tuple[float, dict[str, float]]:
    """Add ``batch``'s gradient to the parameters' ``.grad``, one micro-batch at a time (``micro_batches`` by
    ``h["micro_tokens"]``), each micro-batch's loss weighted by its share of the batch's ``weight``; the batch's
    loss and numbers (the same weighted sums)."""
    total = sum(weight(x) for x in batch)
    loss_sum, numbers = 0.0, {}
    for micro in micro_batches(batch, size, int(h.get("micro_tokens") or 0)):
        share = sum(weight(x) for x in micro) / total
        with cast():
            loss, these = step(micro)
        check_finite(step_no, h, loss=float(loss.detach()))
        (loss * share).backward()
        loss_sum += float(loss.detach()) * share
        for k, v in these.items():
            numbers[k] = numbers.get(k, 0.0) + v * share
    return loss_sum, numbers


def matrix_weights(model) -> int:
    """The weights a token's forward pass multiplies: every 2-D parameter once (a tied embedding counted once, as
    the output layer), the adapters' small matrices included. A forward pass costs 2 x this in FLOPs per token."""
    seen, n = set(), 0
    for p in model.parameters():
        if p.dim() == 2 and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def model_flops(model, forward_tokens: float, logs: list[dict[str, float]]) -> dict[str, float]:
    """The model FLOPs a training did, for its MFU: 2N per token of each forward-only pass (``forward_tokens``:
    tokens x passes), and 4N per token an update trains on (``logs``' ``tokens``): its forward, and a backward
    that computes the activations' gradients (2N) but not the frozen weights' (LoRA; full fine-tuning is 6N)."""
    n = matrix_weights(model)
    trained = sum(x.get("tokens", 0.0) for x in logs)
    return {"model_flops": float(2 * n * forward_tokens + 4 * n * trained), "trained_tokens": trained}


def mean_of(logs: list[dict[str, float]], key: str) -> float:
    vals = [x[key] for x in logs if key in x]
    return sum(vals) / len(vals) if vals else float("nan")
