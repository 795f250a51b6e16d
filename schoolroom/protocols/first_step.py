"""First-step guidance (first-step-advantage.md).

0. The student starts where the paper's does: fine-tuned on the train split's gold solutions (``start = "sft"``,
   3 epochs; ``"base"`` guides the untrained model, a departure). Model teachers load their own weights
   (``teacher_settings``: the base model, the student's start, an SFT of their own, an adapter folder).
For each teacher and each k, the teacher writes the first k steps of every problem's
solution, the student continues from them, the verifier grades. k = 0 is the unguided
baseline (teacher-independent, so it runs once). Guidance of k steps on a problem with k or
fewer gold steps already holds the answer: the k's are compared on the problems with more
than max(k) gold steps, and the report says how many were set aside. Each condition's EvalReport
counts the comparable problems, and a Note of kind ``condition`` claims its set-aside verdicts: every attempt
of a condition carries its name (``Run.condition_of``).
``intervene_at`` (the paper's Figure 2): the student writes its own first j-1 steps, the teacher writes step j,
the student goes on; compared with no intervention on the problems with more than max(j) gold steps.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec

from schoolroom.api import (Acc, Attempt, Classroom, EvalReport, Figure, Guidance, Note, Problem, Report, Series,
                            SFTConfig, Student, Table, TrainResult, Verdict, accuracy, answers_match,
                            departs_from_gold, difference, protocol)
from schoolroom.protocols.start import StartSettings, given, sets_defined, sft_on_gold, start_policy, start_sets


class TeacherSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How a model teacher is set up: which weights it writes with and how it is asked."""

    # base | start (the student's start policy) | sft (its own SFT: `teacher_sft` on `teacher_sft_data`) | a path to
    # a peft adapter folder
    adapter: str = "base"
    # prompt: asked for the first k steps (an instruction-following teacher: an API model); solution: it solves the
    # problem as the student is asked to and its first k lines are kept (a teacher fine-tuned on solutions: the
    # paper's LLaMA teachers)
    writes: Literal["prompt", "solution"] = "prompt"


class FirstStepConfig(StartSettings, kw_only=True):
    teachers: list[str]
    ks: list[int] = msgspec.field(default_factory=lambda: [0, 1, 2])
    problems: str = "eval"
    students: list[str] = []  # a cohort (agents of role student) sharing the teachers; [] = the config's one student
    sft: SFTConfig = SFTConfig(epochs=3)  # the paper fine-tunes the student 3 epochs on the train split first
    # the paper's Figure 2: the student writes its own first j-1 steps, then the teacher writes step j
    intervene_at: list[int] = []
    intervener: str = ""  # the teacher that intervenes at step j; "" = the first of `teachers`
    teacher_settings: dict[str, TeacherSettings] = {}  # per model teacher; a teacher not named: base, prompt
    teacher_sft_data: str | list[str] = "train"  # a teacher of adapter "sft" learns these sets' gold solutions
    teacher_sft: SFTConfig = SFTConfig(epochs=3)

    def __post_init__(self):
        if not self.ks or not self.teachers:
            raise ValueError("first_step needs at least one teacher and one k (protocol.teachers, protocol.ks)")
        if any(j < 1 for j in self.intervene_at):
            raise ValueError(f"intervene_at counts steps from 1, not {self.intervene_at}")
        if self.intervene_at and len(self.students) > 1:
            raise ValueError("intervene_at runs with one student: the cohort's students write different first steps")
        if self.intervener and self.intervener not in self.teachers:
            raise ValueError(f"intervener {self.intervener!r} is not among teachers ({', '.join(self.teachers)})")
        if unknown := [t for t in self.teacher_settings if t not in self.teachers]:
            raise ValueError(f"teacher_settings names {', '.join(unknown)}, not among teachers "
                             f"({', '.join(self.teachers)})")


def agents_named(config, cfg: FirstStepConfig) -> None:
    """Every teacher and student the settings name is an agent of the config, and the SFT's problem sets are the
    config's (checked before any starts)."""
    missing = [f"{what} {name!r}" for what, names in (("teacher", cfg.teachers), ("student", cfg.students))
               for name in names if name not in config.agents]
    if missing:
        raise ValueError(f"protocol names {', '.join(missing)}, not among the config's agents "
                         f"({', '.join(config.agents)})")
    start_sets(config, cfg)
    if any(s.adapter == "sft" for s in cfg.teacher_settings.values()):
        sets_defined(config, cfg.teacher_sft_data, 'a teacher of adapter "sft"', "teacher_sft_data")


@protocol("first_step", FirstStepConfig, check=agents_named)
def first_step(room: Classroom, cfg: FirstStepConfig) -> Report:
    problems = room.problems(cfg.problems)
    students = cfg.students or [room.name_of(Student)]
    starts: dict[str, TrainResult | None] = {}  # per student model: a cohort of two models is fine-tuned twice
    for s in students:
        model = room.config.agents[s].model
        if model not in starts:
            starts[model] = start_policy(room, cfg, base_model=model if len(students) > 1 else "")
        if starts[model] is not None:
            room.agent(s, Student).load(starts[model])
    start = starts[room.config.agents[students[0]].model]
    set_up_teachers(room, cfg, start)
    writes = {t: cfg.teacher_settings.get(t, TeacherSettings()).writes for t in cfg.teachers}
    started, solved, guides = {}, {}, {}
    for teacher in cfg.teachers:  # every condition is started at once: teachers, k's and agents work side by side
        for k in cfg.ks:
            with room.stage(f"k={k}" if len(cfg.teachers) == 1 else f"{teacher} k={k}"):
                guidance = room.agent(teacher).guide.submit(problems, k, writes=writes[teacher]) if k > 0 else None
                guides[teacher, k] = guidance
                for s in students:  # the guidance is asked once for the cohort
                    solved[s, teacher, k] = room.agent(s, Student).solve.submit(problems, guidance)
                    started[s, teacher, k] = room.verifier.check.submit(solved[s, teacher, k], problems)
    verdicts = room.wait(started)
    strength = teacher_accuracy(problems, {t: room.wait(g) for (t, k), g in guides.items() if g is not None})
    if len(students) > 1:
        return cohort_report(room, cfg, problems, students, verdicts, start, strength)
    correct = {(t, k): [v.correct for v in vs] for (_, t, k), vs in verdicts.items()}
    ids = {(t, k): [v.id for v in vs] for (_, t, k), vs in verdicts.items()}
    t0 = cfg.teachers[0]
    unguided = (room.wait(solved[students[0], t0, 0]), verdicts[students[0], t0, 0]) if 0 in cfg.ks else None
    steps = intervene(room, cfg, problems, students[0], writes, unguided) if cfg.intervene_at else {}
    return first_step_report(room, cfg, problems, correct, ids, steps, start, strength, unguided)


def teacher_accuracy(problems: list[Problem], guidance: dict[str, list[Guidance]]) -> dict[str, dict]:
    """Each teacher's own accuracy: the final answers of the whole solutions it took its steps from (a teacher that
    writes only the steps has none). The strength the paper ranks teachers by."""
    out = {}
    for t, gs in guidance.items():
        if any(g.answer is not None for g in gs):
            out[t] = accuracy([answers_match(g.answer, p.answer) for g, p in zip(gs, problems)])
    return out


def strength_table(strength: dict[str, dict]) -> list[Table]:
    return [Table("The teachers' own accuracy", ["teacher", "accuracy [95% CI]"],
                  [[t, Acc(a["correct"], a["n"])] for t, a in strength.items()],
                  note="Graded on the whole solutions the teachers wrote to take their first steps from (a teacher "
                       "asked for the steps alone writes no answer: not listed).")] if strength else []


def set_up_teachers(room: Classroom, cfg: FirstStepConfig, start: TrainResult | None) -> None:
    """Load each model teacher's adapter: the student's start, its own SFT (one training call for all of them), or a
    given folder."""
    own = None
    for t, how in cfg.teacher_settings.items():
        if how.adapter == "base":
            continue
        if how.adapter == "start":
            adapter = start
        elif how.adapter == "sft":
            own = own or sft_on_gold(room, cfg, cfg.teacher_sft_data, cfg.teacher_sft, name="teacher_sft")
            adapter = own
        else:
            adapter = given(room, how.adapter, f"teacher_settings.{t}.adapter")
        room.agent(t).load(adapter)


def own_steps(a: Attempt) -> list[str]:
    """The steps a student wrote before its answer line."""
    return [s for s in a.steps if not s.lstrip().startswith("####")]


def intervene(room: Classroom, cfg: FirstStepConfig, problems: list[Problem], student: str, writes: dict[str, str],
              unguided: tuple[list[Attempt], list[Verdict]] | None) -> dict[int, dict]:
    """The paper's Figure 2: for each j, the student's own first j-1 steps (of its unguided greedy attempt), then
    the teacher's step j, then the student goes on. A student that answered before writing j-1 steps keeps its
    unguided verdict (there was no step j to step in at). Per j: the verdict per problem and which were reached."""
    teacher = cfg.intervener or cfg.teachers[0]
    if unguided is None:  # no k = 0 condition: the student's own attempts are asked for here
        attempts = room.agent(student, Student).solve(problems)
        unguided = attempts, room.verifier.check(attempts, problems)
    unguided, alone = unguided
    out = {}
    for j in sorted(set(cfg.intervene_at)):
        with room.stage(f"{teacher} at step {j}"):
            reached = [i for i, a in enumerate(unguided) if len(own_steps(a)) >= j - 1]
            todo = [problems[i] for i in reached]
            guidance = room.agent(teacher).next_step(todo, [own_steps(unguided[i])[: j - 1] for i in reached],
                                                     writes=writes[teacher]) if todo else []
            checked = room.verifier.check(room.agent(student, Student).solve(todo, guidance), todo) if todo else []
        verdicts = list(alone)
        for i, v in zip(reached, checked):
            verdicts[i] = v
        out[j] = {"verdicts": verdicts, "reached": set(reached), "teacher": teacher, "alone": alone}
    return out


def first_step_report(room: Classroom, cfg: FirstStepConfig, problems: list[Problem],
                      correct: dict[tuple[str, int], list[bool]], ids: dict[tuple[str, int], list[str]],
                      steps: dict[int, dict], start: TrainResult | None, strength: dict[str, dict],
                      unguided: tuple[list[Attempt], list[Verdict]] | None = None) -> Report:
    kmax, ks = max(cfg.ks), sorted(cfg.ks)
    keep = [i for i, p in enumerate(problems) if len(p.gold_steps) > kmax]
    aside = [i for i in range(len(problems)) if i not in keep]
    metrics: dict = {"n": len(problems), "comparable_n": len(keep), "set_aside": len(problems) - len(keep),
                     "start": started_from(cfg, start), "teachers": {}, "teacher_accuracy": strength}
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
    step_tables = intervention_table(room, cfg, problems, correct, steps, metrics)
    return Report(
        title=f"First-step guidance: {room.config.run.name}",
        lines=[found(cfg, metrics),
               f"Student `{room.model_of('student')}` ({metrics['start']}) on {len(problems)} problems (set "
               f"`{cfg.problems}`: {room.describe_set(cfg.problems)}); k in {ks}; teachers: "
               + ", ".join(f"`{t}` ({teacher_line(room, cfg, t)})" for t in cfg.teachers) + "."],
        tables=[Table(f"Accuracy on the {len(keep)} problems with more than {counted(kmax, 'gold step')}",
                      ["teacher", "k", "accuracy [95% CI]", "difference vs k=0 [95% CI]"], comparable,
                      note=f"{set_aside(len(aside), kmax)} here: guidance of {counted(kmax, 'step')} would already "
                           "hold their answer."),
                *strength_table(strength),
                *cascade_table(problems, unguided, metrics),
                *step_tables,
                Table("Accuracy on all problems", ["teacher", "k", "accuracy [95% CI]"], every),
                Table("By number of gold steps", ["gold steps", "n", "k=0"] + cols, steps_rows,
                      note="Accuracy (correct/n); `given` marks k at or above the problem's step count (the answer "
                           "was in the guidance).")],
        figures=[Figure(name="accuracy_vs_k", title=f"First-step guidance ({len(keep)} problems with > "
                        f"{counted(kmax, 'gold step')})", xlabel="k (steps of guidance given)", ylabel="student accuracy",
                        series=series, xticks=[float(k) for k in ks])],
        metrics=metrics)


def started_from(cfg: FirstStepConfig, start: TrainResult | None) -> str:
    """The student's start policy, in words."""
    if start is None:
        return "the base model, no fine-tuning"
    if cfg.start != "sft":
        return f"adapter {cfg.start}"
    sets = cfg.sft_data if isinstance(cfg.sft_data, str) else ", ".join(cfg.sft_data)
    return f"fine-tuned first on the gold solutions of `{sets}`, {cfg.sft.epochs:g} epochs"


def teacher_line(room: Classroom, cfg: FirstStepConfig, t: str) -> str:
    how = cfg.teacher_settings.get(t)
    if how is None:
        return room.describe(t)
    weights = {"base": "base model", "start": "the student's start adapter",
               "sft": f"its own SFT, {cfg.teacher_sft.epochs:g} epochs on `{cfg.teacher_sft_data}`"}
    return f"{room.describe(t)}; {weights.get(how.adapter, how.adapter)}; writes by {how.writes}"


def found(cfg: FirstStepConfig, metrics: dict) -> str:
    """The report's first line: what the run found, k = 1 against k = 0 per teacher, and step 1 against later."""
    parts = []
    for t, by_k in metrics["teachers"].items():
        k = min((int(k) for k in by_k if int(k) > 0), default=None)
        d = by_k.get(str(k), {}).get("difference_vs_k0") if k is not None else None
        if d is not None:
            parts.append(f"`{t}` k={k} vs k=0 {signed(d)}")
    for j, m in metrics.get("intervention", {}).items():
        parts.append(f"`{m['teacher']}` at step {j} vs none {signed(m['difference_vs_none'])}")
    return "**Found** (paired 95% intervals, points): " + ("; ".join(parts) or "no k > 0 compared with k = 0") + "."


def signed(d: dict) -> str:
    lo, hi = d["ci"]
    verdict = "helps" if lo > 0 else "hurts" if hi < 0 else "no clear difference"
    return f"{100 * d['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] ({verdict})"


def cascade_table(problems: list[Problem], unguided: tuple[list[Attempt], list[Verdict]] | None,
                  metrics: dict) -> list[Table]:
    """The paper's mechanism, read off the student's own answers (k = 0): how often its first step is already off
    the gold track (its result neither a gold step's nor the question's number: ``departs_from_gold``), and its
    accuracy when the first step is on the track and when it is not (errors cascade from the first step)."""
    if unguided is None:
        return []
    attempts, verdicts = unguided
    where = [departs_from_gold(p, own_steps(a)) if own_steps(a) else 0 for p, a in zip(problems, attempts)]
    on = [v.correct for w, v in zip(where, verdicts) if w != 0]
    off = [v.correct for w, v in zip(where, verdicts) if w == 0]
    later = Counter(w + 1 for w in where if w not in (0, None))
    metrics["unguided_first_step"] = {"on_track": len(on), "off_track": len(off), "accuracy_on_track": accuracy(on),
                                      "accuracy_off_track": accuracy(off),
                                      "first_off_track_at_step": {str(k): v for k, v in sorted(later.items())}}
    rows = [["on the gold track", len(on), Acc(sum(on), len(on))], ["off it", len(off), Acc(sum(off), len(off))]]
    return [Table("Where the student goes wrong on its own (k = 0)", ["its first step", "problems",
                                                                       "accuracy [95% CI]"], rows,
                  note="On the gold track: the step's result is a gold step's or the question's number "
                       "(`departs_from_gold`). Of the answers whose first step was on it, the first step off it came "
                       "at step " + (", ".join(f"{k} ({v})" for k, v in sorted(later.items())) or "none") + "; "
                       f"{sum(w is None for w in where)} never left it. An answer whose first step was already on the "
                       "track has little to gain from being handed it.")]


def intervention_table(room: Classroom, cfg: FirstStepConfig, problems: list[Problem],
                       correct: dict[tuple[str, int], list[bool]], steps: dict[int, dict], metrics: dict) -> list[Table]:
    """Figure 2 as a table: accuracy with the teacher's step j after the student's own j-1, on the problems with
    more than max(j) gold steps, against no intervention (paired)."""
    if not steps:
        return []
    jmax = max(steps)
    keep = [i for i, p in enumerate(problems) if len(p.gold_steps) > jmax]
    any_j = next(iter(steps.values()))
    none = [any_j["alone"][i].correct for i in keep]
    rows, out = [], metrics.setdefault("intervention", {})
    rows.append(["none (the student alone)", len(keep), Acc(sum(none), len(none)), None])
    for j, m in sorted(steps.items()):
        sub = [m["verdicts"][i].correct for i in keep]
        d = difference(none, sub, room.config.run.seed)
        reached = sum(i in m["reached"] for i in keep)
        a = accuracy(sub)
        out[str(j)] = {"teacher": m["teacher"], "accuracy": a, "reached": reached,
                       "difference_vs_none": {"mean": d.mean, "ci": [d.low, d.high]}}
        report_condition(room, f"first_step/{m['teacher']}/at step {j}", a, {"teacher": m["teacher"], "step": j},
                         [m["verdicts"][i].id for i in keep], [])
        rows.append([f"step {j}", reached, Acc(sum(sub), len(sub)), d])
    return [Table(f"Intervention at step j by `{any_j['teacher']}` on the {len(keep)} problems with more than "
                  f"{counted(jmax, 'gold step')}", ["teacher steps in at", "reached step j", "accuracy [95% CI]",
                                                     "difference vs none [95% CI]"], rows,
                  note="The student writes its own first j-1 steps (its unguided greedy answer), the teacher writes "
                       "step j, the student goes on. A student that answered before writing j-1 steps keeps its own "
                       "answer (`reached step j` counts the others). The paper's Figure 2: intervention at the first "
                       "step helps most, less after.")]


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
                  verdicts: dict[tuple[str, str, int], list[Verdict]], start: TrainResult | None,
                  strength: dict[str, dict]) -> Report:
    """Per student and for the cohort (every student's attempts pooled): accuracy per teacher and k on the
    comparable problems, and the difference from k = 0 (paired per problem and student)."""
    kmax, ks = max(cfg.ks), sorted(cfg.ks)
    keep = [i for i, p in enumerate(problems) if len(p.gold_steps) > kmax]
    aside = [i for i in range(len(problems)) if i not in keep]
    correct = {c: [v.correct for v in vs] for c, vs in verdicts.items()}
    metrics: dict = {"n": len(problems), "comparable_n": len(keep), "set_aside": len(problems) - len(keep),
                     "start": started_from(cfg, start), "teacher_accuracy": strength,
                     "students": {s: {"teachers": {}} for s in students},
                     "cohort": {"teachers": {}}}
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
        lines=["Students: " + ", ".join(f"`{s}` ({room.describe(s)})" for s in students) + f", each {metrics['start']}; {len(problems)} "
               f"problems (set `{cfg.problems}`: {room.describe_set(cfg.problems)}); k in {ks}; teachers: "
               + ", ".join(f"`{t}` ({teacher_line(room, cfg, t)})" for t in cfg.teachers) + ". Each teacher's guidance was "
               "asked once and given to every student."],
        tables=[Table(f"Accuracy on the {len(keep)} problems with more than {counted(kmax, 'gold step')}, per "
                      "student and pooled", ["student", "teacher", "k", "accuracy [95% CI]",
                                             "difference vs k=0 [95% CI]"], rows,
                      note=f"{set_aside(len(aside), kmax)}. The cohort rows pool every student's attempts "
                           "(n = students x problems)."), *strength_table(strength)],
        figures=[Figure(name="accuracy_vs_k", title=f"First-step guidance ({len(keep)} problems with > "
                        f"{counted(kmax, 'gold step')})", xlabel="k (steps of guidance given)", ylabel="student accuracy",
                        series=series, xticks=[float(k) for k in ks])],
        metrics=metrics)
