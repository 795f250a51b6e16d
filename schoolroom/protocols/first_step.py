"""First-step guidance (first-step-advantage.md).

For each teacher and each k, the teacher writes the first k steps of every problem's
solution, the student continues from them, the verifier grades. k = 0 is the unguided
baseline (teacher-independent, so it runs once). Guidance of k steps on a problem with k or
fewer gold steps already holds the answer: the k's are compared on the problems with more
than max(k) gold steps, and the report says how many were set aside.
"""

from __future__ import annotations

import msgspec

from schoolroom.messages import EvalReport, Problem
from schoolroom.protocols.classroom import Classroom, Figure, Report, Series, protocol
from schoolroom.protocols.stats import fmt_acc, fmt_diff, paired_difference, wilson


class FirstStepConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    teachers: list[str]
    ks: list[int] = msgspec.field(default_factory=lambda: [0, 1, 2])
    problems: str = "eval"


@protocol("first_step", FirstStepConfig)
def first_step(room: Classroom, cfg: FirstStepConfig) -> Report:
    if not cfg.ks or not cfg.teachers:
        raise ValueError("first_step needs at least one teacher and one k (protocol.teachers, protocol.ks)")
    problems = room.problems(cfg.problems)
    correct: dict[tuple[str, int], list[bool]] = {}
    for teacher in cfg.teachers:
        for k in cfg.ks:
            guidance = room.agent(teacher).guide(problems, k) if k > 0 else None
            attempts = room.student.solve(problems, guidance)
            verdicts = room.verifier.check(attempts, problems)
            correct[teacher, k] = [v.correct for v in verdicts]
    return first_step_report(room, cfg, problems, correct)


def first_step_report(room: Classroom, cfg: FirstStepConfig, problems: list[Problem],
                      correct: dict[tuple[str, int], list[bool]]) -> Report:
    kmax = max(cfg.ks)
    keep = [i for i, p in enumerate(problems) if len(p.gold_steps) > kmax]
    aside = len(problems) - len(keep)
    ks = sorted(cfg.ks)
    metrics: dict = {"n": len(problems), "comparable_n": len(keep), "set_aside": aside, "teachers": {}}
    lines = [f"# First-step guidance: {room.config.run.name}", "",
             f"Student `{room.config.agents[_student(room)].model}` on {len(problems)} problems "
             f"(set `{cfg.problems}`: {_describe(room, cfg.problems)}); k in {ks}; "
             f"teachers: {', '.join(f'`{t}` ({room.describe(t)})' for t in cfg.teachers)}.",
             "",
             f"## Accuracy on the {len(keep)} problems with more than {kmax} gold steps",
             "",
             f"{aside} problems with {kmax} or fewer gold steps are set aside here: guidance of {kmax} steps "
             "would already hold their answer.", "",
             "| teacher | k | accuracy [95% CI] | difference vs k=0 [95% CI] |", "| --- | --- | --- | --- |"]
    series = []
    for t in cfg.teachers:
        mt = metrics["teachers"][t] = {}
        base = [correct[t, 0][i] for i in keep] if 0 in cfg.ks else None
        xs, ys, lo, hi = [], [], [], []
        for k in ks:
            sub = [correct[t, k][i] for i in keep]
            allp = correct[t, k]
            p, l, h = wilson(sum(sub), len(sub))
            d = paired_difference(base, sub, seed=room.config.run.seed) if base is not None and k else None
            mt[str(k)] = {"comparable": {"correct": sum(sub), "n": len(sub), "accuracy": p, "ci": [l, h]},
                          "all": dict(zip(("accuracy", "ci_low", "ci_high"), wilson(sum(allp), len(allp))),
                                      correct=sum(allp), n=len(allp))}
            if d is not None:
                mt[str(k)]["difference_vs_k0"] = {"mean": d[0], "ci": [d[1], d[2]]}
            lines.append(f"| {t} | {k} | {fmt_acc(sum(sub), len(sub))} | {fmt_diff(d) if d else '—'} |")
            if sub:
                xs.append(k), ys.append(p), lo.append(l), hi.append(h)
            room.record(EvalReport(name=f"first_step/{t}/k={k}", n=len(sub), correct=sum(sub), accuracy=p,
                                   ci_low=l, ci_high=h, metrics={"teacher": t, "k": k, "subset": "comparable"}))
        series.append(Series(label=t, x=xs, y=ys, low=lo, high=hi))

    lines += ["", "## Accuracy on all problems", "", "| teacher | k | accuracy [95% CI] |", "| --- | --- | --- |"]
    for t in cfg.teachers:
        for k in ks:
            allp = correct[t, k]
            lines.append(f"| {t} | {k} | {fmt_acc(sum(allp), len(allp))} |")

    sizes = sorted({len(p.gold_steps) for p in problems})
    cols = [(t, k) for t in cfg.teachers for k in ks if k > 0]
    lines += ["", "## By number of gold steps", "",
              "Accuracy (correct/n); `given` marks k at or above the problem's step count (the answer was in the "
              "guidance).", "",
              "| gold steps | n | k=0 | " + " | ".join(f"{t} k={k}" for t, k in cols) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    by_steps = metrics["by_gold_steps"] = {}
    first = cfg.teachers[0]
    for s in sizes:
        idx = [i for i, p in enumerate(problems) if len(p.gold_steps) == s]
        row = by_steps[str(s)] = {"n": len(idx)}

        def cell(t, k):
            c = sum(correct[t, k][i] for i in idx)
            row[f"{t}/k={k}"] = c / len(idx)
            return f"{100 * c / len(idx):.0f}% ({c}/{len(idx)})" + (" given" if k >= s else "")

        base = cell(first, 0) if 0 in cfg.ks else "—"
        lines.append(f"| {s} | {len(idx)} | {base} | " + " | ".join(cell(t, k) for t, k in cols) + " |")

    fig = Figure(name="accuracy_vs_k", title=f"First-step guidance ({len(keep)} problems with > {kmax} gold steps)",
                 xlabel="k (gold steps given)", ylabel="student accuracy", series=series, xticks=[float(k) for k in ks])
    return Report(title="first_step", markdown="\n".join(lines), metrics=metrics, figures=[fig])


def _student(room: Classroom) -> str:
    return next(n for n, a in room.config.agents.items() if a.role == "student")


def _describe(room: Classroom, name: str) -> str:
    d = room.config.data[name]
    if d.source == "synthetic":
        return f"synthetic, {d.steps} steps, seed {d.seed}"
    return f"{d.source} {d.split}" + (f" from {d.offset}" if d.offset else "")
