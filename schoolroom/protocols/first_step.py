"""First-step guidance (first-step-advantage.md).

For each teacher and each k, the teacher writes the first k steps of every problem's
solution, the student continues from them, the verifier grades. k = 0 is the unguided
baseline (teacher-independent, so it runs once). Guidance of k steps on a problem with k or
fewer gold steps already holds the answer: the k's are compared on the problems with more
than max(k) gold steps, and the report says how many were set aside. Each condition's EvalReport
counts the comparable problems, and a Note of kind ``condition`` claims its set-aside verdicts: every attempt
of a condition carries its name (``Run.condition_of``).
"""

from __future__ import annotations

import msgspec

from schoolroom.api import (Acc, Classroom, EvalReport, Figure, Note, Problem, Report, Series, Student, Table,
                            Verdict, accuracy, difference, protocol)


class FirstStepConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    teachers: list[str]
    ks: list[int] = msgspec.field(default_factory=lambda: [0, 1, 2])
    problems: str = "eval"
    students: list[str] = []  # a cohort (agents of role student) sharing the teachers; [] = the config's one student

    def __post_init__(self):
        if not self.ks or not self.teachers:
            raise ValueError("first_step needs at least one teacher and one k (protocol.teachers, protocol.ks)")


def agents_named(config, cfg: FirstStepConfig) -> None:
    """Every teacher and student the settings name is an agent of the config (checked before any starts)."""
    missing = [f"{what} {name!r}" for what, names in (("teacher", cfg.teachers), ("student", cfg.students))
               for name in names if name not in config.agents]
    if missing:
        raise ValueError(f"protocol names {', '.join(missing)}, not among the config's agents "
                         f"({', '.join(config.agents)})")


@protocol("first_step", FirstStepConfig, check=agents_named)
def first_step(room: Classroom, cfg: FirstStepConfig) -> Report:
    problems = room.problems(cfg.problems)
    students = cfg.students or [room.name_of(Student)]
    started = {}
    for teacher in cfg.teachers:  # every condition is started at once: teachers, k's and agents work side by side
        for k in cfg.ks:
            with room.stage(f"k={k}" if len(cfg.teachers) == 1 else f"{teacher} k={k}"):
                guidance = room.agent(teacher).guide.submit(problems, k) if k > 0 else None  # once for the cohort
                for s in students:
                    attempts = room.agent(s, Student).solve.submit(problems, guidance)
                    started[s, teacher, k] = room.verifier.check.submit(attempts, problems)
    verdicts = room.wait(started)
    if len(students) > 1:
        return cohort_report(room, cfg, problems, students, verdicts)
    correct = {(t, k): [v.correct for v in vs] for (_, t, k), vs in verdicts.items()}
    ids = {(t, k): [v.id for v in vs] for (_, t, k), vs in verdicts.items()}
    return first_step_report(room, cfg, problems, correct, ids)


def first_step_report(room: Classroom, cfg: FirstStepConfig, problems: list[Problem],
                      correct: dict[tuple[str, int], list[bool]], ids: dict[tuple[str, int], list[str]]) -> Report:
    kmax, ks = max(cfg.ks), sorted(cfg.ks)
    keep = [i for i, p in enumerate(problems) if len(p.gold_steps) > kmax]
    aside = [i for i in range(len(problems)) if i not in keep]
    metrics: dict = {"n": len(problems), "comparable_n": len(keep), "set_aside": len(problems) - len(keep),
                     "teachers": {}}
    comparable, every, series = [], [], []
    for t in cfg.teachers:
        mt = metrics["teachers"][t] = {}
        base = [correct[t, 0][i] for i in keep] if 0 in cfg.ks else None
        points = []
        for k in ks:
            sub = [correct[t, k][i] for i in keep]
            d = difference(base, sub, room.config.run.seed) if k else None
            mt[str(k)] = {"comparable": accuracy(sub), "all": accuracy(correct[t, k])}
            if d is not None:
                mt[str(k)]["difference_vs_k0"] = {"mean": d.mean, "ci": [d.low, d.high]}
            comparable.append([t, k, Acc(sum(sub), len(sub)), d])
            every.append([t, k, Acc(sum(correct[t, k]), len(problems))])
            a = mt[str(k)]["comparable"]
            report_condition(room, f"first_step/{t}/k={k}", a, {"teacher": t, "k": k},
                             [ids[t, k][i] for i in keep], [ids[t, k][i] for i in aside])
            if sub:
                points.append((k, a["accuracy"], *a["ci"]))
        series.append(Series(t, *map(list, zip(*points))) if points else Series(t, [], []))
    by_steps, steps_rows = by_gold_steps(cfg, problems, correct)
    metrics["by_gold_steps"] = by_steps
    cols = [f"{t} k={k}" for t in cfg.teachers for k in ks if k > 0]
    return Report(
        title=f"First-step guidance: {room.config.run.name}",
        lines=[f"Student `{room.model_of('student')}` on {len(problems)} problems (set "
               f"`{cfg.problems}`: {room.describe_set(cfg.problems)}); k in {ks}; teachers: "
               + ", ".join(f"`{t}` ({room.describe(t)})" for t in cfg.teachers) + "."],
        tables=[Table(f"Accuracy on the {len(keep)} problems with more than {counted(kmax, 'gold step')}",
                      ["teacher", "k", "accuracy [95% CI]", "difference vs k=0 [95% CI]"], comparable,
                      note=f"{set_aside(len(aside), kmax)} here: guidance of {counted(kmax, 'step')} would already "
                           "hold their answer."),
                Table("Accuracy on all problems", ["teacher", "k", "accuracy [95% CI]"], every),
                Table("By number of gold steps", ["gold steps", "n", "k=0"] + cols, steps_rows,
                      note="Accuracy (correct/n); `given` marks k at or above the problem's step count (the answer "
                           "was in the guidance).")],
        figures=[Figure(name="accuracy_vs_k", title=f"First-step guidance ({len(keep)} problems with > "
                        f"{counted(kmax, 'gold step')})", xlabel="k (gold steps given)", ylabel="student accuracy",
                        series=series, xticks=[float(k) for k in ks])],
        metrics=metrics)


def report_condition(room: Classroom, name: str, a: dict, about: dict, kept: list[str], aside: list[str]) -> None:
    """The condition's EvalReport, counting the comparable problems' verdicts, and a Note (kind ``condition``)
    claiming the set-aside ones for it."""
    room.record(EvalReport(name=name, n=a["n"], correct=a["correct"], accuracy=a["accuracy"], ci_low=a["ci"][0],
                           ci_high=a["ci"][1], metrics=about | {"subset": "comparable"}, verdicts=tuple(kept)),
                *([Note(kind="condition", text=f"{name}: {counted(len(aside), 'verdict')} set aside",
                        data={"name": name, "verdicts": aside})] if aside else []))


def counted(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def set_aside(n: int, kmax: int) -> str:
    return f"{counted(n, 'problem')} with {kmax} or fewer gold steps {'is' if n == 1 else 'are'} set aside"


def by_gold_steps(cfg: FirstStepConfig, problems: list[Problem],
                  correct: dict[tuple[str, int], list[bool]]) -> tuple[dict, list[list]]:
    """Accuracy per number of gold steps: metrics and table rows (k=0 of the first teacher, then every k > 0)."""
    metrics, rows = {}, []
    cols = [(t, k) for t in cfg.teachers for k in sorted(cfg.ks) if k > 0]
    for s in sorted({len(p.gold_steps) for p in problems}):
        idx = [i for i, p in enumerate(problems) if len(p.gold_steps) == s]
        row = metrics[str(s)] = {"n": len(idx)}

        def cell(t, k):
            c = sum(correct[t, k][i] for i in idx)
            row[f"{t}/k={k}"] = c / len(idx)
            return f"{100 * c / len(idx):.0f}% ({c}/{len(idx)})" + (" given" if k >= s else "")

        rows.append([s, len(idx), cell(cfg.teachers[0], 0) if 0 in cfg.ks else None] + [cell(t, k) for t, k in cols])
    return metrics, rows


def cohort_report(room: Classroom, cfg: FirstStepConfig, problems: list[Problem], students: list[str],
                  verdicts: dict[tuple[str, str, int], list[Verdict]]) -> Report:
    """Per student and for the cohort (every student's attempts pooled): accuracy per teacher and k on the
    comparable problems, and the difference from k = 0 (paired per problem and student)."""
    kmax, ks = max(cfg.ks), sorted(cfg.ks)
    keep = [i for i, p in enumerate(problems) if len(p.gold_steps) > kmax]
    aside = [i for i in range(len(problems)) if i not in keep]
    correct = {c: [v.correct for v in vs] for c, vs in verdicts.items()}
    metrics: dict = {"n": len(problems), "comparable_n": len(keep), "set_aside": len(problems) - len(keep),
                     "students": {s: {"teachers": {}} for s in students}, "cohort": {"teachers": {}}}
    rows, series = [], []
    for who in students + ["cohort"]:
        group = students if who == "cohort" else [who]
        for t in cfg.teachers:
            def sub(k: int) -> list[bool]:  # comparable problems, student-major
                return [correct[s, t, k][i] for s in group for i in keep]

            base = sub(0) if 0 in cfg.ks else None
            mt = (metrics["cohort"] if who == "cohort" else metrics["students"][who])["teachers"].setdefault(t, {})
            points = []
            for k in ks:
                d = difference(base, sub(k), room.config.run.seed) if k else None
                a = mt[str(k)] = accuracy(sub(k))
                if d is not None:
                    a["difference_vs_k0"] = {"mean": d.mean, "ci": [d.low, d.high]}
                rows.append([who if who != "cohort" else f"cohort of {len(students)} (pooled)", t, k,
                             Acc(a["correct"], a["n"]), d])
                report_condition(room, f"first_step/{who}/{t}/k={k}", a, {"student": who, "teacher": t, "k": k},
                                 [verdicts[s, t, k][i].id for s in group for i in keep],
                                 [verdicts[s, t, k][i].id for s in group for i in aside])
                if a["n"]:
                    points.append((k, a["accuracy"], *a["ci"]))
            series.append(Series(f"{who} / {t}", *map(list, zip(*points))) if points else Series(f"{who} / {t}", [], []))
    return Report(
        title=f"First-step guidance, a cohort of {len(students)} students: {room.config.run.name}",
        lines=["Students: " + ", ".join(f"`{s}` ({room.describe(s)})" for s in students) + f"; {len(problems)} "
               f"problems (set `{cfg.problems}`: {room.describe_set(cfg.problems)}); k in {ks}; teachers: "
               + ", ".join(f"`{t}` ({room.describe(t)})" for t in cfg.teachers) + ". Each teacher's guidance was "
               "asked once and given to every student."],
        tables=[Table(f"Accuracy on the {len(keep)} problems with more than {counted(kmax, 'gold step')}, per "
                      "student and pooled", ["student", "teacher", "k", "accuracy [95% CI]",
                                             "difference vs k=0 [95% CI]"], rows,
                      note=f"{set_aside(len(aside), kmax)}. The cohort rows pool every student's attempts "
                           "(n = students x problems).")],
        figures=[Figure(name="accuracy_vs_k", title=f"First-step guidance ({len(keep)} problems with > "
                        f"{counted(kmax, 'gold step')})", xlabel="k (gold steps given)", ylabel="student accuracy",
                        series=series, xticks=[float(k) for k in ks])],
        metrics=metrics)
