"""Supervised fine-tuning of a LoRA adapter on (prompt, completion) text pairs with TRL's SFTTrainer."""

from __future__ import annotations

from typing import Any

from schoolroom.training.common import hyper, load_policy, lora_config, resolve, run_trainer, trainer_args


def train_sft(model_path: str, examples: list[dict[str, str]], out_dir: str, lora: dict[str, Any] = {},
              settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu", init_adapter: str | None = None,
              tokenizer=None, dtype: str = "auto") -> dict[str, float]:
    """Train on ``examples`` (``{"prompt", "completion"}``: loss on the completion only); adapter saved to ``out_dir``.

    ``init_adapter`` continues an earlier adapter instead of starting a fresh LoRA.
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("no examples to train on")
    set_seed(seed)
    h = hyper(settings)
    precision = resolve(dtype, device)
    model = load_policy(model_path, device, adapter=init_adapter, precision=precision)
    args = trainer_args(SFTConfig, h, out_dir, seed, device, precision, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                         peft_config=None if init_adapter else lora_config(lora))
    return run_trainer(trainer, out_dir, h) | {"examples": float(len(examples))} | precision.metrics()
