"""Scalars a run records, per round (or RL iteration), read off its messages as they are logged:

- ``accuracy/<condition>``: every EvalReport;
- ``train/<adapter>/<metric>``: every TrainResult's metrics (loss, reward, KL, ...);
- ``tokens/<agent>``, ``generations/<agent>``, ``seconds/<agent>``: engine usage and time in calls, summed per
  round and given when the round is over.

The same function feeds the Python API (``Run.scalars()``), TensorBoard event files (``[run] tensorboard =
true``) and Weights & Biases (``[run] wandb_project``), so the curves are the log's numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from schoolroom.messages import Call, EvalReport, Message, TrainResult, Usage


class Scalars:
    """Turns messages into ``(tag, step, value)`` in log order; per-round sums come out when the round ends."""

    def __init__(self):
        self.round: int | None = None
        self.sums: dict[str, float] = defaultdict(float)

    def feed(self, messages: list[Message]) -> list[tuple[str, int, float]]:
        out = []
        for m in messages:
            if self.round is not None and m.round != self.round and isinstance(m, (Usage, Call)):
                out += self.flush()
            if isinstance(m, EvalReport):
                out.append((f"accuracy/{m.name}", m.round, m.accuracy))
            elif isinstance(m, TrainResult):
                out += [(f"train/{m.adapter}/{k}", m.round, float(v)) for k, v in sorted(m.metrics.items())
                        if isinstance(v, (int, float)) and not isinstance(v, bool)]
            elif isinstance(m, Usage):
                self.round = m.round
                self.sums[f"tokens/{m.agent}"] += m.prompt_tokens + m.completion_tokens
                self.sums[f"generations/{m.agent}"] += m.calls
            elif isinstance(m, Call):
                self.round = m.round
                self.sums[f"seconds/{m.agent}"] += m.seconds
        return [x for x in out if not (isinstance(x[2], float) and math.isnan(x[2]))]

    def flush(self) -> list[tuple[str, int, float]]:
        out = [(tag, self.round, v) for tag, v in sorted(self.sums.items())] if self.round is not None else []
        self.sums.clear()
        self.round = None
        return out


def scalars(messages: list[Message]) -> list[tuple[str, int, float]]:
    s = Scalars()
    return s.feed(messages) + s.flush()


class Sink:
    """Where live scalars go while a run writes its log: TensorBoard event files under the run directory,
    Weights & Biases when it is installed and a project is named (its offline mode, ``WANDB_MODE=offline``,
    is its own to respect)."""

    def __init__(self, run_dir: Path, run_id: str, tensorboard: bool, wandb_project: str | None, config: dict):
        self.scalars, self.writers = Scalars(), []
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError("[run] tensorboard = true needs the tensorboard package: "
                                   "pip install 'schoolroom[tensorboard]'") from None
            tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            self.writers.append((lambda tag, step, v: tb.add_scalar(tag, v, step), tb.close))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                wandb = None  # never required: a config naming a project still runs without it
            if wandb is not None:
                run = wandb.init(project=wandb_project, name=run_id, dir=str(run_dir), config=config,
                                 resume="allow", id=run_id.replace("/", "-"))  # WANDB_MODE=offline is wandb's own
                self.writers.append((lambda tag, step, v: run.log({tag: v, "round": step}), run.finish))

    def __call__(self, messages: list[Message]) -> None:
        self._put(self.scalars.feed(messages))

    def _put(self, points) -> None:
        for write, _ in self.writers:
            for tag, step, v in points:
                write(tag, step, v)

    def close(self) -> None:
        self._put(self.scalars.flush())
        for _, close in self.writers:
            close()
