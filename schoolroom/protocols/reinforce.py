"""Let's Reinforce Step by Step (lets-reinforce-step-by-step.md): RL of the student with outcome and process rewards.

1. Start: SFT on step-by-step gold solutions (or a given adapter, or the base model).
2. Reward models: an ORM and a PRM trained first (or loaded), each on its own verifier agent.
3. For each arm of the comparison, from the same start, ``iterations`` times:
       rollouts = student.solve(batch, n, temperature)        # prompts mixed from the train sets by `mix`
       rewards  = verifier.score(rollouts)                    # the answer check, the ORM, or the PRM
       adapter  = trainer.train(ppo | grpo, rollouts, rewards) # PRM step scores aggregated by the arm's rule
       student.load(adapter)
   held-out accuracy every ``eval_every`` iterations and at the end.
   With ``overlap`` (one step off-policy, as AReaL's and verl's asynchronous modes): while the trainer trains on
   iteration i's rollouts, the student already writes iteration i+1's with the adapter of i-1, and the update's
   ratio is against the sampling log-probabilities the rollouts carry (``old_logprobs = "sampled"``).
The arms are the paper's comparison: answer-check reward, ORM, PRM-avg, PRM-prod, PRM-max, PRM-min, and GRPO
beside PPO. Every rollout, score and update is a message in the log.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import msgspec

from schoolroom.api import (AGGREGATIONS, TRAINING_KINDS, Attempt, Classroom, GRPOConfig, PPOConfig, Problem, Report,
                            StepRewards, TrainRequest, TrainResult, Verdict, protocol)
from schoolroom.protocols.reinforce_report import reinforce_report
from schoolroom.protocols.reward_models import RewardModelSettings, reward_models
from schoolroom.protocols.start import start_policy, start_sets


class Arm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One RL run of the comparison."""

    name: str
    reward: Literal["answer", "orm", "prm"] = "answer"  # what scores the rollouts: the answer check, the ORM or PRM
    aggregate: str = "min"  # prm step scores to one reward: min | max | avg | prod | last
    algorithm: str = "ppo"  # ppo | grpo | any training kind registered with @training_kind (its settings: ``settings``)
    step_rewards: bool = False  # ppo + prm: each step's score at the step's last token instead of one aggregate
    # this arm's hyperparameters over the protocol's ppo / grpo table (keys of PPOConfig / GRPOConfig; for another
    # training kind, its whole settings)
    settings: dict[str, Any] = {}

    def __post_init__(self):
        if self.aggregate not in AGGREGATIONS:
            raise ValueError(f"arm {self.name}: aggregate is one of {', '.join(AGGREGATIONS)}, not {self.aggregate!r}")
        if self.algorithm not in TRAINING_KINDS:
            raise ValueError(f"arm {self.name}: algorithm: {TRAINING_KINDS.unknown(self.algorithm)}")
        if self.algorithm in RL:  # a key the algorithm does not read is an error, not silently ignored
            try:
                RL[self.algorithm]().merged(self.settings)
            except msgspec.ValidationError as e:
                raise ValueError(f"arm {self.name}: settings: {e}".replace("- at `$`", "")) from None


RL = {"ppo": PPOConfig, "grpo": GRPOConfig}


def _paper_arms() -> list[Arm]:
    return [Arm(name="answer"), Arm(name="orm", reward="orm")] + \
        [Arm(name=f"prm-{how}", reward="prm", aggregate=how) for how in ("avg", "prod", "max", "min")] + \
        [Arm(name="grpo-answer", algorithm="grpo")]


class ReinforceConfig(RewardModelSettings, kw_only=True):
    train: list[str] = msgspec.field(default_factory=lambda: ["train"])  # problem sets the RL prompts come from
    mix: list[float] = []  # their shares of each batch (the paper mixes GSM8K and MATH); default: equal
    eval: list[str] = msgspec.field(default_factory=lambda: ["eval"])  # held-out sets
    iterations: int = 8
    batch: int = 8  # problems per iteration
    n: int = 4  # rollouts per problem
    temperature: float = 0.7
    max_tokens: int | None = None  # per rollout (default: the student's max_tokens)
    eval_every: int = 4
    overlap: bool = False  # generate iteration i+1 while training on i (one step off-policy); see the docstring
    ppo: PPOConfig = PPOConfig()  # the PPO arms' hyperparameters
    grpo: GRPOConfig = GRPOConfig()  # the GRPO arms'

    arms: list[Arm] = msgspec.field(default_factory=_paper_arms)

    def __post_init__(self):
        super().__post_init__()
        if self.mix and len(self.mix) != len(self.train):
            raise ValueError(f"mix gives {len(self.mix)} shares for {len(self.train)} train sets")
        if len({a.name for a in self.arms}) != len(self.arms):
            raise ValueError("arm names must differ")


@protocol("reinforce", ReinforceConfig, check=start_sets)
def reinforce(room: Classroom, cfg: ReinforceConfig) -> Report:
    pools = {name: room.problems(name) for name in cfg.train}
    tests = {name: room.problems(name) for name in cfg.eval}
    start = start_policy(room, cfg)
    models = reward_models(room, cfg, start, {arm.reward for arm in cfg.arms})
    evals = {("start", 0): evaluate(room, "start", tests, start)}
    history: list[dict] = []
    for arm in cfg.arms:
        adapter = start
        room.set_round(0)
        room.student.load(start)  # every arm starts from the same policy
        following = None  # overlap: the next iteration's rollouts, started while this one trains
        for it in room.rounds(cfg.iterations, stage=arm.name):
            batch = prompts(pools, cfg, it)
            rollouts = room.wait(following if following is not None else solve(room, cfg, batch))
            correct = [v.correct for v in room.agent(cfg.checker).check(rollouts, batch)]
            rewards = score(room, cfg, arm, rollouts, batch)
            training = room.trainer.train.submit(rl_request(cfg, arm, rollouts, rewards, adapter, start),
                                                 rollouts + rewards, batch)
            following = solve(room, cfg, prompts(pools, cfg, it + 1)) if cfg.overlap and it < cfg.iterations else None
            adapter = room.wait(training)
            room.student.load(adapter)
            history.append({"arm": arm.name, "iteration": it, "sample_accuracy": sum(correct) / len(correct),
                            "attempts": rollouts, "rewards": rewards, "correct": correct} | adapter.metrics)
            if it % cfg.eval_every == 0 or it == cfg.iterations:
                evals[arm.name, it] = evaluate(room, f"{arm.name}/it{it}", tests, adapter)
    room.student.load(None)
    return reinforce_report(room, cfg, start, models, tests, evals, history)


def solve(room: Classroom, cfg: ReinforceConfig, batch: list[Problem]):
    """The student's rollouts of ``batch``, started: the answer is ``room.wait``'s."""
    return room.student.solve.submit(batch, n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_tokens)


def prompts(pools: dict[str, list[Problem]], cfg: ReinforceConfig, it: int) -> list[Problem]:
    """Iteration ``it``'s problems: from each train set its share of the batch, walking a fixed shuffle of the set
    (the same for every arm, so the arms see the same prompts)."""
    shares = cfg.mix or [1.0] * len(cfg.train)
    counts = [int(cfg.batch * s / sum(shares)) for s in shares]
    for i in sorted(range(len(counts)), key=lambda i: -(cfg.batch * shares[i] / sum(shares) - counts[i])):
        if sum(counts) < cfg.batch:
            counts[i] += 1
    batch = []
    for name, count in zip(cfg.train, counts):
        pool = pools[name]
        order = sorted(range(len(pool)), key=lambda i: random.Random(f"{cfg.seed}:{name}:{i}").random())
        batch += [pool[order[((it - 1) * count + j) % len(pool)]] for j in range(count)] if pool else []
    return batch


def score(room: Classroom, cfg: ReinforceConfig, arm: Arm, rollouts: list[Attempt],
          batch: list[Problem]) -> list[StepRewards]:
    if arm.reward == "answer":
        return room.agent(cfg.checker).score(rollouts, batch, scorer="answer")
    return room.agent(cfg.orm if arm.reward == "orm" else cfg.prm).score(rollouts, batch)


def rl_request(cfg: ReinforceConfig, arm: Arm, rollouts: list[Attempt], rewards: list[StepRewards],
               adapter: TrainResult | None, start: TrainResult | None) -> TrainRequest:
    base = {"ppo": cfg.ppo, "grpo": cfg.grpo}.get(arm.algorithm)  # another kind: the arm's own settings only
    hyper = (base.merged(arm.settings).asdict() if base else dict(arm.settings)) | {
        "temperature": cfg.temperature, "aggregate": arm.aggregate, "step_rewards": arm.step_rewards} | (
        {"old_logprobs": "sampled"} if cfg.overlap and base else {})  # the adapter before sampled them
    return TrainRequest(kind=arm.algorithm, name=arm.name, data=tuple(m.id for m in rollouts + rewards),
                        base_adapter=adapter.path if adapter else None,
                        reference_adapter=start.path if start else None, lora=cfg.lora.asdict(), hyper=hyper, seed=cfg.seed)


def evaluate(room: Classroom, name: str, tests: dict[str, list[Problem]], adapter: TrainResult | None
             ) -> dict[str, list[Verdict]]:
    """Verdicts per held-out set (each an EvalReport; compare() then logs no second one)."""
    return {s: room.evaluate(f"{name}/{s}" if len(tests) > 1 else name, problems, adapter)
            for s, problems in tests.items()}
