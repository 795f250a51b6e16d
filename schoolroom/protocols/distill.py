"""On-policy distillation (Thinking Machines, "On-Policy Distillation"; tinker-cookbook, slime, verl): the student
samples, the teacher grades every token it wrote, and the student learns from the per-token reverse KL.

1. The teacher: its model with an SFT adapter on the gold solutions of ``teacher_sft_data`` (on CPU: SmolLM2,
   clearly stronger than the base student; the report gives both accuracies), the base model, or a given adapter.
2. The student starts from ``start`` (the base model by default: distillation is how it learns).
3. Each arm, from the same start, on the same problems, with the same number of samples per iteration:
       opd:         rollouts = student.solve(batch, n, temperature=1)
                    scores   = teacher.logprobs(rollouts)              # log pi_teacher of each sampled token
                    adapter  = trainer.train(opd, rollouts, scores)    # advantage -(log pi_s - log pi_t)
       sft_teacher: samples  = teacher.solutions(batch, n)             # off-policy distillation: SFT on them
                    adapter  = trainer.train(sft, samples)
       grpo:        rollouts = student.solve(batch, n); rewards = the answer check; adapter = trainer.train(grpo)
       student.load(adapter)
   held-out accuracy every ``eval_every`` iterations and at the end, against the student tokens generated and the
   teacher tokens scored or written.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schoolroom.api import (Classroom, GRPOConfig, OPDConfig, Problem, Report, SFTConfig, Teacher, TrainRequest,
                            TrainResult, protocol)
from schoolroom.protocols.distill_report import distill_report
from schoolroom.protocols.reinforce import prompts
from schoolroom.protocols.start import StartSettings, given, sets_defined, sft_on_gold, start_policy, start_sets

ARMS = ("opd", "sft_teacher", "grpo")


class DistillConfig(StartSettings, kw_only=True):
    start: str = "base"
    teacher: str = ""  # the teacher agent ("": the config's one teacher)
    teacher_adapter: str = "sft"  # sft (on the gold solutions of teacher_sft_data) | base | a peft adapter folder
    teacher_sft_data: str | list[str] = "train"  # the problem set(s) whose gold solutions the teacher's SFT learns
    teacher_sft: SFTConfig = SFTConfig(epochs=3)
    context: Literal["question", "solution"] = "question"  # what the teacher reads before the student's tokens
    train: list[str] = msgspec.field(default_factory=lambda: ["train"])  # the problem sets the prompts come from
    mix: list[float] = []  # the train sets' shares of each batch; default: equal
    eval: str = "eval"  # the held-out problem set
    iterations: int = 8
    batch: int = 8  # problems per iteration
    n: int = 4  # samples per problem (the student's rollouts; the teacher's solutions for sft_teacher)
    temperature: float = 1.0  # the teacher's log-probabilities are at temperature 1
    max_tokens: int | None = None  # per sample (default: the agent's max_tokens)
    eval_every: int = 4  # held-out accuracy every this many iterations, and at the end
    arms: list[Literal["opd", "sft_teacher", "grpo"]] = msgspec.field(default_factory=lambda: list(ARMS))
    opd: OPDConfig = OPDConfig()  # the opd arm's settings
    sft_teacher: SFTConfig = SFTConfig(epochs=1)  # SFT on the teacher's samples: each iteration's, once
    grpo: GRPOConfig = GRPOConfig()  # the grpo arm's
    checker: str = ""  # the verifier that checks answers ("": the config's one verifier)


def check(config, cfg: DistillConfig) -> None:
    start_sets(config, cfg)
    teachers = [n for n, a in config.agents.items() if a.role == "teacher"]
    teacher, trainers = cfg.teacher or (teachers[0] if len(teachers) == 1 else ""), \
        [a.model for a in config.agents.values() if a.role == "trainer"]
    if cfg.teacher_adapter == "sft" and teacher in config.agents and trainers \
            and config.agents[teacher].model != trainers[0]:
        raise ValueError(f'teacher_adapter = "sft" trains the teacher\'s adapter with the trainer, on its model '
                         f"{trainers[0]}, but the teacher {teacher} runs {config.agents[teacher].model}: give the "
                         'teacher the trainer\'s model, or set protocol.teacher_adapter = "base" or an adapter folder')
    if cfg.teacher_adapter == "sft":
        sets_defined(config, cfg.teacher_sft_data, 'teacher_adapter = "sft"', "teacher_sft_data",
                     ', or set protocol.teacher_adapter = "base"')


@protocol("distill", DistillConfig, check=check)
def distill(room: Classroom, cfg: DistillConfig) -> Report:
    pools = {name: room.problems(name) for name in cfg.train}
    tests = room.problems(cfg.eval)
    teacher = cfg.teacher or room.name_of(Teacher)
    start = start_policy(room, cfg)
    taught = _teacher_adapter(room, cfg)
    room.agent(teacher).load(taught)
    evals = {("start", 0): room.evaluate("start", tests, start)}
    if taught is not None:  # the teacher's own accuracy, where the student's model can carry its adapter
        evals["teacher", 0] = room.evaluate("teacher", tests, taught)
    history: list[dict] = []
    for arm in cfg.arms:
        adapter, spent = start, {"student_tokens": 0, "teacher_tokens": 0}
        room.set_round(0)
        room.student.load(start)
        for it in room.rounds(cfg.iterations, stage=arm):
            batch = prompts(pools, cfg, it)
            adapter, data, cost = STEP[arm](room, cfg, teacher, batch, adapter, start)
            room.student.load(adapter)
            spent = {k: spent[k] + cost[k] for k in spent}
            history.append({"arm": arm, "iteration": it, "spent": spent, "data": data}
                           | cost | (adapter.metrics if adapter else {}))
            if it % cfg.eval_every == 0 or it == cfg.iterations:
                evals[arm, it] = room.evaluate(f"{arm}/it{it}", tests, adapter)
    room.student.load(None)
    return distill_report(room, cfg, start, taught, tests, evals, history)


def _teacher_adapter(room: Classroom, cfg: DistillConfig) -> TrainResult | None:
    if cfg.teacher_adapter == "base":
        return None
    if cfg.teacher_adapter != "sft":
        return given(room, cfg.teacher_adapter, "teacher_adapter")
    return sft_on_gold(room, cfg, cfg.teacher_sft_data, cfg.teacher_sft, name="teacher_sft")


def _request(cfg: DistillConfig, kind: str, hyper: dict, data: list, adapter: TrainResult | None,
             start: TrainResult | None) -> TrainRequest:
    return TrainRequest(kind=kind, name=kind, data=tuple(m.id for m in data), lora=cfg.lora.asdict(), seed=cfg.seed,
                        hyper=hyper, base_adapter=adapter.path if adapter else None,
                        reference_adapter=start.path if start else None)


def _rollouts(room: Classroom, cfg: DistillConfig, batch: list[Problem]):
    return room.student.solve(batch, n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_tokens)


def _answer_check(room: Classroom, cfg: DistillConfig, rollouts: list, batch: list[Problem]) -> list:
    return room.agent(cfg.checker or room.name_of("verifier")).score(rollouts, batch, scorer="answer")


def opd_step(room, cfg, teacher, batch, adapter, start):
    rollouts = _rollouts(room, cfg, batch)
    scores = room.agent(teacher, Teacher).logprobs(rollouts, batch, context=cfg.context)
    rewards = _answer_check(room, cfg, rollouts, batch) if cfg.opd.task_coef else []
    hyper = cfg.opd.asdict() | {"temperature": cfg.temperature}
    data = rollouts + scores + rewards
    result = room.trainer.train(_request(cfg, "opd", hyper, data, adapter, start), data, batch)
    return result, rollouts, {"student_tokens": sum(a.tokens for a in rollouts),
                              "teacher_tokens": sum(len(s.logprobs) for s in scores)}


def sft_teacher_step(room, cfg, teacher, batch, adapter, start):
    before = room.usage(teacher)["completion_tokens"]
    samples = room.agent(teacher, Teacher).solutions(batch, n=cfg.n, temperature=cfg.temperature)
    written = room.usage(teacher)["completion_tokens"] - before
    if not samples:  # every sample unparsable (noted by the teacher): nothing to learn this iteration
        return adapter, samples, {"student_tokens": 0, "teacher_tokens": written}
    result = room.trainer.train(_request(cfg, "sft", cfg.sft_teacher.asdict(), samples, adapter, start), samples, batch)
    return result, samples, {"student_tokens": 0, "teacher_tokens": written}


def grpo_step(room, cfg, teacher, batch, adapter, start):
    rollouts = _rollouts(room, cfg, batch)
    rewards = _answer_check(room, cfg, rollouts, batch)
    hyper = cfg.grpo.asdict() | {"temperature": cfg.temperature}
    result = room.trainer.train(_request(cfg, "grpo", hyper, rollouts + rewards, adapter, start), rollouts + rewards,
                                batch)
    return result, rollouts, {"student_tokens": sum(a.tokens for a in rollouts), "teacher_tokens": 0}


STEP = {"opd": opd_step, "sft_teacher": sft_teacher_step, "grpo": grpo_step}
