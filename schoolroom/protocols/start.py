"""The policy a protocol's student starts from: SFT on gold solutions, the base model, or a given adapter.

The papers fine-tune the student on the training split's step-by-step solutions before anything else (First-Step
Advantage: 3 epochs on GSM8K; Let's Reinforce Step by Step: the generator's SFT). ``start = "sft"`` is that one
training call: it is logged, so a resumed run answers it from the log instead of training again.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from schoolroom.api import Classroom, LoRAConfig, Problem, SFTConfig, TrainRequest, TrainResult, gold_rationale


class StartSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    start: str = "sft"  # sft (on the gold solutions of `sft_data`) | base | a path to a peft adapter folder
    sft_data: str | list[str] = "train"  # problem set(s) whose gold solutions the SFT start learns
    sft: SFTConfig = SFTConfig()  # the SFT start's hyperparameters: learning_rate, epochs, batch_size, ...
    lora: LoRAConfig = LoRAConfig()
    seed: int = 0


def problem_sets(room: Classroom, names: str | list[str]) -> list[Problem]:
    return [p for name in ([names] if isinstance(names, str) else names) for p in room.problems(name)]


def given(room: Classroom, path: str, what: str) -> TrainResult:
    """An adapter folder named in the config, as the TrainResult agents load."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(f"{what} = {path!r}: no adapter_config.json there, not a peft adapter folder")
    result = TrainResult(request_id="", adapter=folder.name, path=str(folder), metrics={})
    room.record(result)
    return result


def sft_on_gold(room: Classroom, cfg: StartSettings, data: str | list[str], hyper: SFTConfig,
                name: str = "sft", base_model: str = "") -> TrainResult:
    """One SFT call on the gold solutions of the problem set(s) ``data`` (of ``base_model``; "": the trainer's)."""
    train = problem_sets(room, data)
    gold = [gold_rationale(p) for p in train]
    request = TrainRequest(kind="sft", name=name, data=tuple(m.id for m in gold), lora=cfg.lora.asdict(),
                           hyper=hyper.asdict(), seed=cfg.seed, base_model=base_model)
    return room.trainer.train(request, gold, train)


def start_policy(room: Classroom, cfg: StartSettings, base_model: str = "") -> TrainResult | None:
    """The policy everything starts from: SFT on gold solutions (of ``base_model``; "": the trainer's model), the
    base model (None), or a given adapter."""
    if cfg.start == "base":
        return None
    if cfg.start != "sft":
        return given(room, cfg.start, "start")
    return sft_on_gold(room, cfg, cfg.sft_data, cfg.sft, base_model=base_model)


def start_sets(config, cfg: StartSettings) -> None:
    """A config check: the SFT start's problem sets are among the config's data sets (said before any agent
    starts, with the way out)."""
    if cfg.start == "sft":
        sets_defined(config, cfg.sft_data, 'start = "sft"', "sft_data", ', or set protocol.start = "base"')


def sets_defined(config, names: str | list[str], who: str, key: str, or_else: str = "") -> None:
    """A config check: the problem sets ``names`` (protocol setting ``key``), whose gold solutions ``who`` trains on,
    are among the config's data sets."""
    missing = [n for n in ([names] if isinstance(names, str) else names) if n not in config.data]
    if missing:
        raise ValueError(f"{who} trains on the gold solutions of the data set(s) {', '.join(missing)}, which the "
                         f"config does not define (it has {', '.join(config.data) or 'none'}): add [data."
                         f"{missing[0]}], set protocol.{key} to one of the config's sets{or_else}")
