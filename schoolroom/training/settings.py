"""The hyperparameter tables a config may give each training kind, as typed Structs.

A key no kind reads (``lr`` for ``learning_rate``) or a value of the wrong type is a config error
naming the file and the key before anything starts. Every field defaults to None: "the kind's own
default" (``DEFAULT_HYPER``, ``DEFAULT_PPO``, ...); ``asdict`` gives only the keys the config set, so a
TrainRequest carries what the user wrote.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Table(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, frozen=True):
    def asdict(self) -> dict[str, Any]:
        """The keys the config set."""
        return msgspec.to_builtins(self)


class Settings(_Table, kw_only=True, frozen=True):
    """What every kind takes (SFT)."""

    learning_rate: float | None = None
    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    max_steps: int | None = None
    max_length: int | None = None
    warmup_steps: int | None = None
    max_grad_norm: float | None = None
    max_loss: float | None = None  # a loss above it (or NaN, infinite) stops the training; default 1e4


class DPOSettings(Settings, kw_only=True, frozen=True):
    beta: float | None = None


class ReflectionSettings(Settings, kw_only=True, frozen=True):
    """Tailored learning's SFT + self-reflection (``schoolroom.training.reflection``)."""

    reflection_weight: float | None = None
    margin: float | None = None
    anchor: str | None = None  # rationale (the authors' code) | question
    pool: str | None = None  # last (the authors' code: the EOS token) | mean


class RewardModelTraining(Settings, kw_only=True, frozen=True):
    separator: str | None = None  # the PRM's step separator token
    labels: str | None = None  # PRM rollout labels: hard | soft


class RLSettings(Settings, kw_only=True, frozen=True):
    """PPO and GRPO (``DEFAULT_PPO``, ``DEFAULT_GRPO``)."""

    temperature: float | None = None
    clip: float | None = None
    aggregate: str | None = None
    step_rewards: bool | None = None
    empty_reward: float | None = None
    kl_coef: float | None = None  # ppo
    clip_value: float | None = None
    vf_coef: float | None = None
    gamma: float | None = None
    lam: float | None = None
    whiten: bool | None = None
    beta: float | None = None  # grpo
    scale_rewards: bool | None = None


class LoraSettings(_Table, kw_only=True, frozen=True):
    """The LoRA adapter (peft ``LoraConfig``); None: ``schoolroom.training.common.DEFAULT_LORA``."""

    r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | str | None = None
    bias: str | None = None
    use_rslora: bool | None = None
    use_dora: bool | None = None
    modules_to_save: list[str] | None = None
    init_lora_weights: bool | str | None = None
    layers_to_transform: list[int] | None = None
    rank_pattern: dict[str, int] | None = None
    alpha_pattern: dict[str, float] | None = None
