"""Direct preference optimisation of a LoRA adapter with TRL's DPOTrainer.

Starting from an adapter (the SFT one), the trainer continues it and uses a frozen copy of it
as the reference model (TRL's "ref" adapter), so the result still loads on the plain base model.
"""

from __future__ import annotations

from typing import Any

from schoolroom.training.common import hyper, load_policy, lora_config, resolve, run_trainer, trainer_args
from schoolroom.training.settings import DPOConfig as Settings


def train_dpo(model_path: str, pairs: list[dict[str, str]], out_dir: str, lora: dict[str, Any] = {},
              settings: dict[str, Any] = {}, seed: int = 0, device: str = "cpu", init_adapter: str | None = None,
              tokenizer=None, dtype: str = "auto") -> dict[str, float]:
    """Train on ``pairs`` (``{"prompt", "chosen", "rejected"}`` text); adapter saved to ``out_dir``."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("no preference pairs to train on")
    set_seed(seed)
    h = hyper(settings, Settings)
    precision = resolve(dtype, device)
    model = load_policy(model_path, device, adapter=init_adapter, precision=precision)
    args = trainer_args(DPOConfig, h, out_dir, seed, device, precision, beta=float(h["beta"]))
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer, peft_config=None if init_adapter else lora_config(lora))
    return run_trainer(trainer, out_dir, h) | {"pairs": float(len(pairs))} | precision.metrics()
