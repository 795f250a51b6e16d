"""The distill protocol's report: what was found first (on-policy distillation against each baseline at the end,
paired), the teacher's and the start's accuracy, held-out accuracy per arm against the start, and the curves
against the student tokens generated and the teacher tokens scored or written."""

from __future__ import annotations

from typing import Any

from schoolroom.api import (Classroom, Figure, Report, Series, Student, Table, Teacher, TrainResult, compare,
                            difference, fmt, fmt_diff)


def distill_report(room: Classroom, cfg, start: TrainResult | None, taught: TrainResult | None, tests: list,
                   evals: dict, history: list[dict]) -> Report:
    final = {arm: evals[arm, cfg.iterations] for arm in cfg.arms if (arm, cfg.iterations) in evals}
    results = {"start": evals["start", 0]} | ({"teacher": evals["teacher", 0]} if ("teacher", 0) in evals else {}) \
        | final
    table, accuracy, fig = compare(results, "start", seed=cfg.seed, header="policy",
                                   note=f"Each arm after {cfg.iterations} iterations; the teacher: the student's model "
                                        "with the teacher's adapter (not measured for a teacher of another model).")
    teacher = cfg.teacher or room.name_of(Teacher)
    lines = [found(cfg, final), "",
             f"Student `{room.model_of(Student)}` from {start.adapter if start else 'the base model'} ({cfg.start}); "
             f"teacher `{teacher}` ({room.describe(teacher)}) with {taught.adapter if taught else 'no adapter'} "
             f"({cfg.teacher_adapter}), reading the {cfg.context} before the student's tokens. {cfg.iterations} "
             f"iterations of {cfg.batch} problems × {cfg.n} samples at temperature {cfg.temperature}; "
             f"{len(tests)} held-out problems (`{cfg.eval}`)."]
    arms = {"opd": f"- opd: advantage = -{cfg.opd.kl_coef} × (log π_student - log π_teacher) per sampled token"
                   + (f" + {cfg.opd.task_coef} × the answer check's group advantage" if cfg.opd.task_coef else "")
                   + f"; GRPO's clipped objective, learning rate {cfg.opd.learning_rate}, β {cfg.opd.beta}",
            "sft_teacher": f"- sft_teacher: SFT on the teacher's own {cfg.n} samples per problem (off-policy "
                           f"distillation), learning rate {cfg.sft_teacher.learning_rate}",
            "grpo": f"- grpo: the answer check's group advantage, learning rate {cfg.grpo.learning_rate}, "
                    f"β {cfg.grpo.beta}"}
    lines += [arms[arm] for arm in cfg.arms]  # the settings of the arms that ran, no others
    rows = [[h["arm"], h["iteration"], h["spent"]["student_tokens"], h["spent"]["teacher_tokens"],
             fmt(-h["advantage_mean"] if h["arm"] == "opd" and "advantage_mean" in h else None, ".3f"),
             fmt(h.get("reward_mean") if h["arm"] == "grpo" or cfg.opd.task_coef else None, ".2f"),
             fmt(h.get("last_loss"), ".3f")] for h in history]
    curves = Table("Per iteration", ["arm", "iteration", "student tokens (total)", "teacher tokens (total)",
                                     "reverse KL per token (opd, before the update)", "reward mean",
                                     "last loss"], rows,
                   note="Teacher tokens: scored (opd) or written (sft_teacher). The reverse KL is the mean of "
                        "log π_student - log π_teacher over the sampled tokens.")
    figures = [fig] + [spend_figure(cfg, evals, history, key, label) for key, label in
                       (("student_tokens", "student tokens generated"), ("teacher_tokens", "teacher tokens"))]
    metrics: dict[str, Any] = {"accuracy": accuracy, "arms": list(cfg.arms), "context": cfg.context,
                               "curves": [{k: v for k, v in h.items() if k != "data"} for h in history]}
    return Report(title=f"On-policy distillation: {room.config.run.name}", lines=lines, tables=[table, curves],
                  metrics=metrics, figures=figures)


def found(cfg, final: dict) -> str:
    """The report's first line: on-policy distillation against each other arm at the end, paired."""
    if "opd" not in final or len(final) < 2:
        return "**Found**: one arm only; nothing compared."
    opd = [v.correct for v in final["opd"]]
    parts = [f"opd vs {arm} {cell(difference([v.correct for v in vs], opd, cfg.seed))}"
             for arm, vs in final.items() if arm != "opd"]
    return f"**Found** (paired 95% intervals, points, after {cfg.iterations} iterations): " + "; ".join(parts) + "."


def spend_figure(cfg, evals: dict, history: list[dict], key: str, label: str) -> Figure:
    """Held-out accuracy of each arm against what it had spent by each evaluation (the start at 0)."""
    base = evals["start", 0]
    series = []
    for arm in cfg.arms:
        spent = {h["iteration"]: h["spent"][key] for h in history if h["arm"] == arm}
        points = [(0, base)] + [(spent[it], evals[a, it]) for (a, it) in evals if a == arm and it in spent]
        series.append(Series(label=arm, x=[float(x) for x, _ in points],
                             y=[sum(v.correct for v in vs) / max(1, len(vs)) for _, vs in points]))
    return Figure(name=f"accuracy_by_{key}", title=f"Held-out accuracy against {label}", xlabel=label,
                  ylabel="accuracy", series=series)


def cell(d) -> str:
    return fmt_diff((d.mean, d.low, d.high))
