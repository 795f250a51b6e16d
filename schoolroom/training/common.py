"""What SFT, DPO and the reflection loss share: loading the policy, LoRA settings, trainer arguments."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

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


def load_policy(model_path: str, device: str = "cpu", adapter: str | None = None, trainable: bool = True):
    """The base model, with ``adapter`` loaded (trainable, to continue it) when given."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    return model.to(device)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): measured on a CPU without it (AVX2 only),
    a bf16 matmul ran at 0.9 GFLOP/s against 160 in fp32, and a 3-step SFT took 162 s."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return True  # not Linux: TRL's default
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def trainer_args(cls, h: dict[str, Any], out_dir: str, seed: int, device: str, **extra):
    """A TRL config (SFTConfig, DPOConfig) for small LoRA runs: no checkpoints, no reports, CPU when asked."""
    kwargs = dict(output_dir=out_dir, per_device_train_batch_size=int(h["batch_size"]),
                  gradient_accumulation_steps=int(h["grad_accum"]), learning_rate=float(h["learning_rate"]),
                  num_train_epochs=float(h["epochs"]), max_steps=int(h["max_steps"]), warmup_steps=int(h["warmup_steps"]),
                  logging_steps=1, save_strategy="no", report_to=[], seed=seed, data_seed=seed,
                  gradient_checkpointing=False, disable_tqdm=True, dataloader_num_workers=0,
                  logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (and stops the training), not hidden
                  max_length=int(h["max_length"]), lr_scheduler_type="linear",
                  max_grad_norm=float(h.get("max_grad_norm", 1.0)))
    if device == "cpu":
        kwargs["use_cpu"] = True  # TRL defaults to bf16, which needs this on CPU (autocast; faster than fp32) ...
        kwargs["bf16"] = cpu_has_bf16()  # ... where the CPU does bf16 natively; elsewhere it is ~100x slower
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


def fit(model, examples: list, step: Callable[[list], tuple[Any, dict[str, float]]], h: dict[str, Any], seed: int,
        schedule: str = "linear", dropout: bool = True) -> list[dict[str, float]]:
    """A small training loop for losses TRL has no trainer for (reflection, reward models, PPO, GRPO).

    Shuffled batches of ``h["batch_size"]`` examples for ``h["max_steps"]`` steps (or ``h["epochs"]`` passes),
    AdamW on the trainable parameters, gradients clipped at ``h["max_grad_norm"]`` (default 1.0), the learning rate
    decaying linearly to 0 (``schedule="linear"``) or ``"constant"``; ``dropout=False`` keeps dropout off (RL:
    the probabilities trained are the ones sampled). ``step(batch)`` returns the loss and the numbers to log;
    returns one log per step: ``{"loss": ..., **numbers}``.
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
    model.train(dropout)
    for _ in range(steps):
        if len(order) < bs:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order += more
        batch, order = [examples[i] for i in order[:bs]], order[bs:]
        loss, numbers = step(batch)
        check_finite(len(logs) + 1, h, loss=float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, float(h.get("max_grad_norm", 1.0)))
        check_finite(len(logs) + 1, h, gradient_norm=float(norm))
        opt.step()
        sched.step()
        logs.append({"loss": float(loss.detach()), **numbers})
    model.eval()
    return logs


def mean_of(logs: list[dict[str, float]], key: str) -> float:
    vals = [x[key] for x in logs if key in x]
    return sum(vals) / len(vals) if vals else float("nan")
