"""What reinforce and best_of_n share: the policy they start from, and the reward models trained first.

Start: SFT on the gold solutions of a problem set (the paper fine-tunes its generator on step-by-step
solutions first), the base model, or an adapter folder given by path.

Reward models (Let's Reinforce Step by Step, stage 2), each on its own verifier agent:
- ORM: the start policy samples attempts on ``reward_data``; the checker's verdicts are the labels.
- PRM: labels per step from the Explorer's rollouts from every step prefix of the wrong samples (Math-Shepherd's
  Monte-Carlo labels; the correct samples' steps are labelled 1), and/or human labels in the PRM800K layout.
Either can be loaded instead of trained (``orm_adapter``, ``prm_adapter``: a folder of an earlier run's).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from schoolroom.environment import gold_rationale
from schoolroom.environment.datasets import resolve_data_dir
from schoolroom.environment.prm800k import load_prm800k
from schoolroom.messages import Attempt, Message, Problem, StepRewards, TrainRequest, TrainResult, Verdict
from schoolroom.protocols.classroom import Classroom
from schoolroom.training.settings import LoraSettings, RewardModelTraining, Settings


class RewardModelSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    checker: str = "verifier"  # the agent that checks final answers
    orm: str = "orm"  # the verifier agent that runs the outcome reward model
    prm: str = "prm"  # the verifier agent that runs the process reward model
    explorer: str = "explorer"  # rolls out from step prefixes for the PRM's Monte-Carlo labels
    start: str = "sft"  # sft (on the gold solutions of `sft_data`) | base | a path to a peft adapter folder
    sft_data: str | list[str] = "train"  # problem set(s) whose gold solutions the SFT start learns
    sft: Settings = Settings()  # hyperparameters: learning_rate, epochs, batch_size, ...
    reward_data: str | list[str] = "train"  # problem set(s) whose sampled attempts the reward models learn from
    reward_samples: int = 4  # attempts per problem
    reward_temperature: float = 0.7
    prm_labels: list[str] = msgspec.field(default_factory=lambda: ["human"])  # human (the paper) and/or rollouts
    label_mode: str = "hard"  # rollout labels: hard (any rollout reached the answer) | soft (the fraction)
    rollouts_k: int = 4  # rollouts per step prefix
    max_explore: int | None = None  # explore at most this many wrong attempts
    human_labels: str = "prm800k_phase1_test_stepwise_critique_derived"  # under the data directory, or a path
    human_limit: int | None = None  # use at most this many human-labelled solutions
    neutral: str = "positive"  # a neutral (0) PRM800K rating is: positive | negative | skip
    orm_adapter: str | None = None  # load this trained ORM instead of training one
    prm_adapter: str | None = None
    orm_settings: RewardModelTraining = RewardModelTraining()
    prm_settings: RewardModelTraining = RewardModelTraining()
    lora: LoraSettings = LoraSettings()
    seed: int = 0

    def __post_init__(self):
        if set(self.prm_labels) - {"rollouts", "human"} or not self.prm_labels:
            raise ValueError(f"prm_labels are rollouts and/or human, not {self.prm_labels}")
        if self.label_mode not in ("hard", "soft"):
            raise ValueError(f"label_mode is hard or soft, not {self.label_mode!r}")
        if self.neutral not in ("positive", "negative", "skip"):
            raise ValueError(f"neutral is positive, negative or skip, not {self.neutral!r}")


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


def start_policy(room: Classroom, cfg: RewardModelSettings) -> TrainResult | None:
    """The policy everything starts from: SFT on gold solutions, the base model (None), or a given adapter."""
    if cfg.start == "base":
        return None
    if cfg.start != "sft":
        return given(room, cfg.start, "start")
    train = problem_sets(room, cfg.sft_data)
    gold = [gold_rationale(p) for p in train]
    request = TrainRequest(kind="sft", name="sft", data=tuple(m.id for m in gold), lora=cfg.lora.asdict(), hyper=cfg.sft.asdict(),
                           seed=cfg.seed)
    return room.trainer.train(request, gold, train)


def reward_models(room: Classroom, cfg: RewardModelSettings, start: TrainResult | None,
                  kinds: set[str]) -> dict[str, TrainResult]:
    """Train (or load) the reward models named in ``kinds`` (orm, prm) and load each on its verifier."""
    out: dict[str, TrainResult] = {}
    if not kinds & {"orm", "prm"}:
        return out
    problems = problem_sets(room, cfg.reward_data)
    samples: list[Attempt] = []
    verdicts: list[Verdict] = []
    if ("orm" in kinds and not cfg.orm_adapter) or ("prm" in kinds and not cfg.prm_adapter):
        room.student.load(start)
        samples = room.student.solve(problems, n=cfg.reward_samples, temperature=cfg.reward_temperature)
        verdicts = room.agent(cfg.checker).check(samples, problems)
    for kind in ("orm", "prm"):
        if kind not in kinds:
            continue
        agent, adapter = (cfg.orm, cfg.orm_adapter) if kind == "orm" else (cfg.prm, cfg.prm_adapter)
        if adapter:
            out[kind] = given(room, adapter, f"{kind}_adapter")
        else:
            data, pool = samples + verdicts, problems
            if kind == "prm":
                more, extra = prm_labels(room, cfg, start, samples, verdicts, problems)
                data, pool = data + more, problems + extra
            request = TrainRequest(kind=kind, name=f"{kind}_model", data=tuple(m.id for m in data),
                                   base_model=room.config.agents[agent].model, lora=cfg.lora.asdict(),
                                   hyper=(cfg.orm_settings if kind == "orm" else cfg.prm_settings).asdict()
                                   | {"labels": cfg.label_mode}, seed=cfg.seed)
            out[kind] = room.trainer.train(request, data, pool)
        room.agent(agent).load(out[kind])
    return out


def prm_labels(room: Classroom, cfg: RewardModelSettings, start: TrainResult | None, samples: list[Attempt],
               verdicts: list[Verdict], problems: list[Problem]) -> tuple[list[Message], list[Problem]]:
    """Step labels for the PRM (and any problems they add): Monte-Carlo rollouts from the prefixes of the wrong
    samples (correct samples need none: their steps led to the answer), and/or human labels."""
    labels: list[Message] = []
    extra: list[Problem] = []
    if "rollouts" in cfg.prm_labels:
        wrong = [a for a, v in zip(samples, verdicts) if not v.correct and a.answer is not None][: cfg.max_explore]
        room.agent(cfg.explorer).load(start)
        explored = room.agent(cfg.explorer).explore(wrong, problems, k=cfg.rollouts_k, search="linear",
                                                    temperature=cfg.reward_temperature)
        labels += [m for m in explored if isinstance(m, StepRewards)]
    if "human" in cfg.prm_labels:
        root = resolve_data_dir()
        path = Path(cfg.human_labels) if Path(cfg.human_labels).is_absolute() or root is None \
            else root / cfg.human_labels
        rows = load_prm800k(path, neutral=cfg.neutral, limit=cfg.human_limit)
        extra = list({p.problem_id: p for p, _, _ in rows}.values())
        labels += [m for _, a, r in rows for m in (a, r)]
        room.record(*extra)
    return labels, extra


def departures(room: Classroom, cfg: RewardModelSettings) -> list[str]:
    """How the reward models of this run differ from the paper's, one markdown bullet each (for reports)."""
    out = []
    for kind, agent in (("orm", cfg.orm), ("prm", cfg.prm)):
        if agent in room.config.agents:
            out.append(f"- {kind.upper()} backbone: `{room.config.agents[agent].model}`, a causal LM with LoRA and a "
                       "scalar head (the paper: DeBERTa-v3, about 300M parameters)")
    loaded = "loaded from `{}`: trained outside this run, on the data that run used"
    out.append("- ORM data: " + (loaded.format(cfg.orm_adapter) if cfg.orm_adapter else
               "the start policy's own samples, labelled by the answer check (the paper: PRM800K's generator "
               "samples, labelled by their final answers)"))
    labels = {"human": f"human labels (`{cfg.human_labels}`, neutral counted {cfg.neutral})",
              "rollouts": f"Monte-Carlo labels from {cfg.rollouts_k} rollouts per step prefix of the wrong samples "
                          f"({cfg.label_mode}; correct samples' steps labelled 1)"}
    out.append("- PRM labels: " + (loaded.format(cfg.prm_adapter) if cfg.prm_adapter else
               " and ".join(labels[x] for x in cfg.prm_labels) +
               ("" if cfg.prm_labels == ["human"] else " (the paper: PRM800K human labels)")))
    return out
