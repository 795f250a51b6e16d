"""The teacher_learns report: what was found first (students taught by the trained teacher against the starting one,
paired), the teacher's reward per iteration, the reward each teacher's final explanations earn from the starting
student, held-out accuracy, and three before/after explanations."""

from __future__ import annotations

import statistics
from typing import Any

from schoolroom.api import (Classroom, Figure, Report, Series, Student, Table, Teacher, compare, difference, fmt,
                            fmt_diff)

STARTING, TRAINED = "taught by the start teacher", "taught by the trained teacher"


def teacher_learns_report(room: Classroom, cfg, teach: list, tests: list, before: list, after: list, scored: dict,
                          evals: dict, history: list[dict]) -> Report:
    """``scored``: per teacher ("start", "trained"), each final explanation's (RLT reward, gain, mean KL) as the
    starting student reads it."""
    table, accuracy, fig = compare(evals, "start", seed=cfg.seed, header="student",
                                   note=f"Each student fine-tuned from the start on one explanation per problem of "
                                        f"`{cfg.teach}` ({len(teach)} problems) followed by its gold solution; the "
                                        "co-trained student: the one the teacher was rewarded by, at the end.")
    teach_rows = [[f"the {who} teacher", mean([s[0] for s in ss if s]), mean([s[1] for s in ss if s]),
                   mean([s[2] for s in ss if s and s[2] is not None]),
                   mean([e.tokens for e in (before if who == "start" else after)])] for who, ss in scored.items()]
    teach_table = Table(f"The final explanations of `{cfg.teach}`, read by the starting student",
                        ["explanations by", "RLT reward (mean)", "gain in the solution term (mean)",
                         "KL per token (mean)", "tokens (mean)"],
                        [[r[0]] + [fmt(x, ".3f") for x in r[1:4]] + [fmt(r[4], ".1f")] for r in teach_rows],
                        note="The same problems and the same (starting) student for both teachers: the reward the "
                             "trained teacher earns beside the one it started with.")
    rows = [[h["iteration"], fmt(h["reward_mean"], ".3f"), fmt(h["gain_mean"], ".3f"), fmt(h["kl_mean"], ".3f"),
             fmt(h["tokens_mean"], ".1f"), fmt(h.get("flat_groups"), ".0f"), fmt(h.get("last_loss"), ".3f"),
             h["student_examples"] if h["student_examples"] is not None else ""] for h in history]
    gain = "the gain in correctness" if cfg.reward == "rcl" else "the gain in the solution term"
    curves = Table("The teacher per iteration", ["iteration", "reward (mean)", f"{gain} (mean)",
                                                 "KL per token (mean)", "explanation tokens (mean)", "flat groups",
                                                 "last loss", "student fine-tuned on"], rows,
                   note="Flat groups: problems whose explanations all earned the same reward (they teach the "
                        "teacher nothing). Student fine-tuned on: the explanations that helped most, at the "
                        "iterations the student was updated.")
    reward_fig = Figure(name="teacher_reward", title="The teacher's reward per iteration", xlabel="iteration",
                        ylabel="mean over the batch's explanations",
                        series=[Series(label=label, x=[float(h["iteration"]) for h in history],
                                       y=[h[key] if h[key] is not None else float("nan") for h in history])
                                for key, label in (("reward_mean", "reward"), ("gain_mean", gain))])
    teacher = cfg.teacher or room.name_of(Teacher)
    lines = [found(cfg, evals, scored), "",
             f"Student `{room.model_of(Student)}` from {cfg.start}; teacher `{teacher}` ({room.describe(teacher)}) "
             f"from {cfg.teacher_adapter}, seeing the question and the gold solution. {cfg.iterations} iterations of "
             f"{cfg.batch} problems × {cfg.n} explanations at temperature {cfg.temperature}; {len(tests)} held-out "
             f"problems (`{cfg.eval}`).",
             reward_line(cfg),
             f"- the teacher's update: GRPO, learning rate {cfg.teacher_grpo.learning_rate}, β "
             f"{cfg.teacher_grpo.beta}, from its start",
             f"- the student: fine-tuned every {cfg.student_every} iterations on the explanation that helped it most "
             "per problem (largest gain above 0), then the gold solution" if cfg.student_every else
             "- the student: never fine-tuned during the run (student_every = 0)",
             "- departures from RLT: the teacher's prompt is this framework's `teacher_explain` (no think tags, so "
             "no unmatched-format penalty); LoRA on a small model instead of full fine-tuning at learning rate 1e-6;"
             " the student reads the explanation as the start of its own answer, as RLT's student chat does"]
    examples = Table("Explanations before and after training (the first three problems of the final set)",
                     ["problem", "the start teacher", "the trained teacher"],
                     [[p.question[:160], clip(b.text), clip(a.text)] for p, b, a in list(zip(teach, before, after))[:3]])
    metrics: dict[str, Any] = {"accuracy": accuracy, "reward": cfg.reward, "curves": history,
                               "teach_set": {row[0]: dict(zip(("reward", "gain", "kl", "tokens"), row[1:]))
                                             for row in teach_rows}}
    return Report(title=f"A teacher that learns from its students: {room.config.run.name}", lines=lines,
                  tables=[table, curves, teach_table, examples], metrics=metrics, figures=[fig, reward_fig])


def found(cfg, evals: dict, scored: dict) -> str:
    parts = []
    if STARTING in evals and TRAINED in evals:
        d = difference([v.correct for v in evals[STARTING]], [v.correct for v in evals[TRAINED]], cfg.seed)
        parts.append(f"students fine-tuned on the trained teacher's explanations against the starting teacher's "
                     f"{fmt_diff((d.mean, d.low, d.high))} points held out (paired 95%)")
    if "co-trained student" in evals:
        d = difference([v.correct for v in evals["start"]], [v.correct for v in evals["co-trained student"]], cfg.seed)
        parts.append(f"the co-trained student against its start {fmt_diff((d.mean, d.low, d.high))}")
    start, trained = (mean([s[0] for s in scored[w] if s]) for w in ("start", "trained"))
    if start is not None and trained is not None:
        parts.append(f"the trained teacher's explanations earn an RLT reward of {trained:.3f} from the starting "
                     f"student, the starting teacher's {start:.3f}")
    return "**Found**: " + "; ".join(parts) + "."


def reward_line(cfg) -> str:
    if cfg.reward == "rcl":
        return ("- reward (RCL): the student's greedy answer correct after reading the explanation minus correct "
                "before (1, 0 or -1); without the efficiency bonus and clipping of Arc-Computer/RCL's "
                "AdaptiveTeachingReward")
    (a, b), (c, d) = cfg.solution_coefs, cfg.kl_coefs
    return (f"- reward (RLT): {a} mean + {b} min of the student's log-probs of the gold solution after the "
            f"explanation, minus the same with no explanation, - ({c} mean + {d} max) of log π_teacher - "
            "log π_student over the explanation's tokens (the student seeing the question only)")


def clip(text: str, n: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + " …"


def mean(xs: list) -> float | None:
    return statistics.fmean(xs) if xs else None
