"""A teacher trained by its students' gains (Sakana's RLT, "Reinforcement Learning Teachers of Test Time Scaling";
RCL's "correct after teaching minus before" as a setting): two models trained in one run.

1. The teacher starts from ``teacher_adapter`` (the base model by default), the student from ``start``.
2. Each iteration, on a batch of training problems:
       explanations = teacher.explain(batch, n)              # seeing the question and the gold solution
       readings     = student.read(batch, [none] + explanations)
                      # log pi_student of the gold solution after the question alone, and after each explanation
       rewards      = rlt: [mean + 0.01 min of the solution's log-probs] after it, minus the same untaught,
                           - [3 mean + 0.03 max of (log pi_teacher - log pi_student) over the explanation's tokens]
                      rcl: the student's greedy answer correct after reading it, minus correct before
       teacher      = trainer.train(grpo, explanations, rewards); teacher.load(teacher)
   every ``student_every`` iterations: the student is fine-tuned on the explanation that helped it most per problem
   (the largest gain, if above 0) followed by the gold solution, as RLT distils; student.load(student).
3. At the end, on the ``teach`` problems: the starting and the trained teacher each write one explanation per
   problem; the starting student reads both (the reward each earns); a student fine-tuned from ``start`` on each
   teacher's explanations (explanation + gold solution) is evaluated on the held-out set, paired; and the co-trained
   student against its start.
"""

from __future__ import annotations

import statistics
from typing import Literal

import msgspec

from schoolroom.api import (Classroom, Explanation, GRPOConfig, Problem, Rationale, Reading, Report, SFTConfig,
                            StepRewards, Teacher, TrainRequest, TrainResult, protocol, solution_text, split_steps)
from schoolroom.protocols.reinforce import prompts
from schoolroom.protocols.start import StartSettings, given, start_policy, start_sets
from schoolroom.protocols.teacher_learns_report import teacher_learns_report


class TeacherLearnsConfig(StartSettings, kw_only=True):
    start: str = "base"  # the student's start: base | sft (on the gold solutions of sft_data) | an adapter folder
    teacher: str = ""  # the teacher agent ("": the config's one teacher)
    teacher_adapter: str = "base"  # the teacher's start: base | a peft adapter folder
    train: list[str] = msgspec.field(default_factory=lambda: ["train"])  # the problem sets the batches come from
    mix: list[float] = []  # the train sets' shares of each batch; default: equal
    teach: str = "train"  # the problems both teachers explain at the end, for the students fine-tuned on them
    eval: str = "eval"  # the held-out problem set
    iterations: int = 16
    batch: int = 8  # problems per iteration
    n: int = 4  # explanations per problem (the teacher's GRPO group)
    temperature: float = 0.7  # the teacher's sampling temperature (RLT's)
    max_tokens: int | None = None  # per explanation (default: the teacher agent's max_tokens)
    reward: Literal["rlt", "rcl"] = "rlt"
    solution_coefs: list[float] = msgspec.field(default_factory=lambda: [1.0, 0.01])  # rlt: mean, min of log-probs
    kl_coefs: list[float] = msgspec.field(default_factory=lambda: [3.0, 0.03])  # rlt: mean, max of the KL per token
    teacher_grpo: GRPOConfig = GRPOConfig(beta=0.04)  # the teacher's update (RLT: beta 0.04)
    student_every: int = 4  # the student's fine-tuning every this many iterations (0: never; the student stays)
    student_sft: SFTConfig = SFTConfig(epochs=1)  # on the explanations that helped it most since the last one
    teach_sft: SFTConfig = SFTConfig(epochs=2)  # the final students' fine-tuning on each teacher's explanations


def check(config, cfg: TeacherLearnsConfig) -> None:
    start_sets(config, cfg)
    models = {a.role: a.model for a in config.agents.values() if a.role in ("student", "teacher", "trainer")}
    if cfg.teacher:
        models["teacher"] = config.agents[cfg.teacher].model if cfg.teacher in config.agents else models.get("teacher")
    if len(set(models.values())) > 1:
        raise ValueError("teacher_learns trains the teacher and the student with one trainer, on one model: give "
                         "the student, the teacher and the trainer the same model (they have "
                         + ", ".join(f"{k} {v}" for k, v in sorted(models.items())) + ")")
    if len(cfg.solution_coefs) != 2 or len(cfg.kl_coefs) != 2:
        raise ValueError("protocol.solution_coefs and protocol.kl_coefs each take two numbers: the weights of the "
                         "mean and the min (solution) or max (KL) over the tokens, as RLT's [1, 0.01] and [3, 0.03]")


@protocol("teacher_learns", TeacherLearnsConfig, check=check)
def teacher_learns(room: Classroom, cfg: TeacherLearnsConfig) -> Report:
    pools = {name: room.problems(name) for name in cfg.train}
    teach, tests = room.problems(cfg.teach), room.problems(cfg.eval)
    teacher = room.agent(cfg.teacher or room.name_of(Teacher), Teacher)
    start = start_policy(room, cfg)
    teacher_start = None if cfg.teacher_adapter == "base" else given(room, cfg.teacher_adapter, "teacher_adapter")
    teacher.load(teacher_start)
    before = teacher.explain(teach, n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    taught, student, history, helped = teacher_start, start, [], []
    room.student.load(student)
    for it in room.rounds(cfg.iterations, stage="teacher"):
        batch = prompts(pools, cfg, it)
        explanations = teacher.explain(batch, n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        rewards, gains, kls = grade(room, cfg, batch, explanations)
        request = TrainRequest(kind="grpo", name="teacher", data=tuple(m.id for m in explanations + rewards),
                               lora=cfg.lora.asdict(), seed=cfg.seed, hyper=cfg.teacher_grpo.asdict()
                               | {"temperature": cfg.temperature}, base_adapter=taught.path if taught else None,
                               reference_adapter=teacher_start.path if teacher_start else None)
        taught = room.trainer.train(request, explanations + rewards, batch)
        teacher.load(taught)
        helped += best_explanations(batch, explanations, gains)
        row = {"iteration": it, "reward_mean": statistics.fmean(r.score for r in rewards),
               "gain_mean": statistics.fmean(gains), "kl_mean": statistics.fmean(kls) if kls else None,
               "tokens_mean": statistics.fmean(e.tokens for e in explanations), "student_examples": None} \
            | taught.metrics
        if cfg.student_every and it % cfg.student_every == 0 and helped:
            student = fine_tune(room, cfg, "student", helped, student, cfg.student_sft)
            room.student.load(student)
            row["student_examples"], helped = len(helped), []
        history.append(row)
    room.set_round(cfg.iterations + 1)
    after = teacher.explain(teach, n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    room.student.load(start)
    readings = room.student.read(teach * 3, [None] * len(teach) + before + after)
    students = {who: fine_tune(room, cfg, f"taught_by_{who}", list(zip(teach, exps)), start, cfg.teach_sft)
                for who, exps in (("start", before), ("trained", after))}
    evals = {"start": room.evaluate("start", tests, start)}
    if student is not start:
        evals["co-trained student"] = room.evaluate("co-trained student", tests, student)
    for who, adapter in students.items():
        evals[f"taught by the {who} teacher"] = room.evaluate(f"taught by the {who} teacher", tests, adapter)
    room.student.load(None)
    teacher.load(None)
    untaught, read = readings[:len(teach)], {r.explanation_id: r for r in readings[len(teach):]}
    scored = {who: [rlt(cfg, read[e.id], u, e) if e.logprobs is not None else None for e, u in zip(exps, untaught)]
              for who, exps in (("start", before), ("trained", after))}
    return teacher_learns_report(room, cfg, teach, tests, before, after, scored, evals, history)


def grade(room: Classroom, cfg: TeacherLearnsConfig, batch: list[Problem], explanations: list[Explanation]
          ) -> tuple[list[StepRewards], list[float], list[float]]:
    """Each explanation's reward (a StepRewards of source ``rlt`` or ``rcl``), the student's gain from it (in the
    solution's log-probability, or in correctness) and the mean KL per explanation token (rlt)."""
    by_id = {p.problem_id: p for p in batch}
    problems = [by_id[e.problem_id] for e in explanations]
    if cfg.reward == "rcl":
        before = {v.problem_id: v.correct for v in room.verifier.check(room.student.solve(batch), batch)}
        after = room.verifier.check(room.student.solve(problems, guidance=explanations), problems)
        gains = [float(v.correct) - float(before[e.problem_id]) for e, v in zip(explanations, after)]
        return [reward(e, g, "rcl") for e, g in zip(explanations, gains)], gains, []
    readings = room.student.read(batch + problems, [None] * len(batch) + explanations)
    untaught = {r.problem_id: r for r in readings[:len(batch)]}
    scored = [rlt(cfg, r, untaught[e.problem_id], e) for e, r in zip(explanations, readings[len(batch):])]
    return [reward(e, s, "rlt") for e, (s, _, _) in zip(explanations, scored)], [g for _, g, _ in scored], \
        [k for _, _, k in scored if k is not None]


def rlt(cfg: TeacherLearnsConfig, read: Reading, untaught: Reading, e: Explanation
        ) -> tuple[float, float, float | None]:
    """RLT's dense reward of one explanation, the student's gain in the solution term, and the mean KL per token."""
    gain = solution_term(cfg, read.solution_logprobs) - solution_term(cfg, untaught.solution_logprobs)
    if e.logprobs is None:
        raise ValueError(f"explanation {e.id} has no sampling log-probabilities (its engine gives none): RLT's KL "
                         "term needs them; use an hf or vllm teacher, or reward = \"rcl\"")
    kl = [t - s for t, s in zip(e.logprobs, read.explanation_logprobs)]
    penalty = cfg.kl_coefs[0] * statistics.fmean(kl) + cfg.kl_coefs[1] * max(kl) if kl else 0.0
    return gain - penalty, gain, statistics.fmean(kl) if kl else None


def solution_term(cfg: TeacherLearnsConfig, logprobs: tuple[float, ...]) -> float:
    return cfg.solution_coefs[0] * statistics.fmean(logprobs) + cfg.solution_coefs[1] * min(logprobs)


def reward(e: Explanation, score: float, source: str) -> StepRewards:
    return StepRewards(problem_id=e.problem_id, attempt_id=e.id, score=round(score, 4), source=source,
                       parents=(e.id,))


def best_explanations(batch: list[Problem], explanations: list[Explanation], gains: list[float]
                      ) -> list[tuple[Problem, Explanation]]:
    """Per problem, the explanation with the largest gain, if above 0 (the one that helped the student most)."""
    out = []
    for p in batch:
        mine = [(g, e) for g, e in zip(gains, explanations) if e.problem_id == p.problem_id and g > 0]
        if mine:
            out.append((p, max(mine, key=lambda x: x[0])[1]))
    return out


def fine_tune(room: Classroom, cfg: TeacherLearnsConfig, name: str, examples: list[tuple[Problem, Explanation]],
              base: TrainResult | None, hyper: SFTConfig) -> TrainResult:
    """SFT of the student from ``base`` on each explanation followed by its gold solution (RLT's distillation
    traces)."""
    rationales = [explained(p, e) for p, e in examples]
    problems = list({p.problem_id: p for p, _ in examples}.values())
    request = TrainRequest(kind="sft", name=name, data=tuple(r.id for r in rationales), lora=cfg.lora.asdict(),
                           hyper=hyper.asdict(), seed=cfg.seed, base_adapter=base.path if base else None)
    return room.trainer.train(request, rationales, problems)


def explained(p: Problem, e: Explanation) -> Rationale:
    text = (e.text.strip() + "\n" if e.text.strip() else "") + solution_text(p.gold_steps, p.answer)
    return Rationale(problem_id=p.problem_id, text=text, steps=tuple(split_steps(text)), answer=p.answer,
                     source="explained", parents=(e.id,))
