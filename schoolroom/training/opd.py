"""On-policy distillation on logged rollouts: the student's own samples, each token graded by the teacher.

The per-token advantage is minus the reverse KL to the teacher at the sampled token, -(log pi_student -
log pi_teacher), with the coefficient ``kl_coef`` (1.0, as tinker-cookbook's ``incorporate_kl_penalty`` and
slime's ``apply_opd_kl_to_advantages``), plus ``task_coef`` times the task reward's group advantage (0 by default:
pure distillation, as their distillation environments). No discounting: each token's own KL only. The update is
GRPO's clipped objective (``grpo.py``); log pi_student is recomputed under the policy the rollouts came from, at
``temperature``; the teacher's log-probabilities come with the rollouts (a TokenScores message per attempt).
"""

from __future__ import annotations

from typing import Any

import torch

from schoolroom.training.grpo import train_grpo
from schoolroom.training.rl import Experience, Rollout
from schoolroom.training.settings import OPDConfig


def distill_advantages(r: Experience, h: dict[str, Any]) -> torch.Tensor:
    """``[A]``: task_coef * the group advantage - kl_coef * (log pi_student - log pi_teacher) at each action."""
    if r.teacher_logp is None or len(r.teacher_logp) < r.actions:
        raise ValueError("a rollout has no teacher log-probability for each of its tokens: on-policy distillation "
                         "trains on the teacher's TokenScores of exactly the sampled ids")
    teacher = torch.tensor(r.teacher_logp[:r.actions], device=r.old_logp.device, dtype=r.old_logp.dtype)
    return float(h["task_coef"]) * r.group_advantage - float(h["kl_coef"]) * (r.old_logp - teacher)


def train_opd(model_path: str, rollouts: list[Rollout], out_dir: str, **kw: Any) -> dict[str, float]:
    """One on-policy distillation iteration on ``rollouts`` (each with ``teacher_logprobs``); the adapter to
    ``out_dir``. ``advantage_mean`` in the metrics is minus the mean reverse KL to the teacher per token."""
    return train_grpo(model_path, rollouts, out_dir, kind=OPDConfig, shape=distill_advantages, **kw)
