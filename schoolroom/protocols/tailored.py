"""Tailored multi-round distillation (tailored-learning.md; the authors' code: Raibows/Learn-to-Reason).

Each round: the student solves the training problems; its mistakes go to the teacher, who writes
rationales tailored to each mistake; the verifier keeps those with the gold answer; the student
is trained on them with SFT plus the self-reflection loss (its own wrong solution as the
negative); it is evaluated on held-out problems. As the authors' README runs it: round 1 starts from
the untrained student (no separate CoT-distillation stage: its exam gives the first mistakes), each
round trains on that round's tailored rationales only and continues the previous round's model. Rounds stop when the held-out gain falls below
``min_gain`` or at ``max_rounds``. Several variants (the paper's ablation: reflection weight 0
vs 0.5, one round vs several) run side by side from the same start.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec

from schoolroom.api import (Acc, Classroom, Figure, LoRAConfig, Note, ReflectionConfig, Report, SFTConfig, Series,
                            Student, Table, Teacher, TrainRequest, Trainer, accuracy, protocol, wilson)


class Variant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    reflection_weight: float = 0.5  # lambda; 0 = plain SFT on the tailored rationales
    max_rounds: int | None = None  # None: the protocol's max_rounds


class TailoredConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    train: str = "train"
    eval: str = "eval"
    max_rounds: int = 3
    min_gain: float = 0.0  # stop when held-out accuracy improves by less than this (a fraction) in a round
    rationales_per_mistake: int = 4
    teacher_temperature: float = 0.7
    answer_key: str = "solution"  # what the teacher sees besides the mistake: "answer" (the paper) or "solution"
    max_mistakes: int | None = None  # per round
    margin: float = 1.0  # the authors' cl_p
    # rationale (the authors' code) | question (a departure: the question prompt as anchor)
    anchor: Literal["rationale", "question"] = "rationale"
    pool: Literal["last", "mean"] = "last"  # last (the authors': the rationale's EOS state) | mean (over its tokens)
    variants: list[Variant] = msgspec.field(default_factory=lambda: [Variant(name="reflection")])
    students: list[str] = []  # a cohort (agents of role student) sharing the teacher; [] = the config's one student
    trainers: dict[str, str] = {}  # student -> the trainer agent that trains it (its model); default: the one trainer
    lora: LoRAConfig = LoRAConfig()
    train_settings: SFTConfig = SFTConfig()  # learning_rate, epochs, batch_size, ...
    seed: int = 0


@protocol("tailored", TailoredConfig)
def tailored(room: Classroom, cfg: TailoredConfig) -> Report:
    train, test = room.problems(cfg.train), room.problems(cfg.eval)
    students = cfg.students or [room.name_of(Student)]
    # the variants (and a cohort's students) are independent: side by side, one trains while another's student
    # solves or the teacher writes; the same request to the teacher from two of them is asked once
    runs = [(s, v) for s in students for v in cfg.variants]
    rows = [x for rows in room.side_by_side(lambda sv: variant_rounds(room, cfg, *sv, train, test,
                                                                      cohort=len(students) > 1), runs)
            for x in rows]
    for s in students:
        room.agent(s, Student).load(None)
    return tailored_report(room, cfg, len(train), len(test), rows, students)


def variant_rounds(room: Classroom, cfg: TailoredConfig, s: str, variant: Variant, train: list, test: list,
                   cohort: bool) -> list[dict]:
    student = room.agent(s, Student)
    trainer = room.agent(cfg.trainers.get(s) or room.name_of(Trainer), Trainer)
    name = f"{s}/{variant.name}" if cohort else variant.name  # of its evaluations and adapters
    room.set_round(0)  # every variant starts from the base student (evaluate loads it)
    previous = [v.correct for v in room.evaluate(f"{name}/round 0", test, student=s)]
    rows = [row(variant.name, 0, previous, previous, {}) | {"student": s}]
    adapter = None
    for r in room.rounds(variant.max_rounds or cfg.max_rounds, stage=name):
        spent = room.usage(room.name_of(Teacher))
        student.load(adapter)  # this variant's student (another variant may have loaded its own meanwhile)
        attempts = student.solve(train)
        mistakes = room.verifier.mistakes(attempts, room.verifier.check(attempts, train))[: cfg.max_mistakes]
        rationales = room.teacher.tailor(mistakes, train, n=cfg.rationales_per_mistake,
                                         temperature=cfg.teacher_temperature, answer_key=cfg.answer_key)
        verdicts = room.verifier.check(rationales, train)
        kept = [x for x, v in zip(rationales, verdicts) if v.correct]
        stats = {"train_mistakes": len(mistakes), "rationales": len(rationales), "kept": len(kept),
                 "dropped": dict(Counter(v.reason for v in verdicts if not v.correct)),
                 "teacher": diff(room.usage(room.name_of(Teacher)), spent)}
        if not kept:
            room.record(Note(kind="skipped", text=f"{name} round {r}: no correct rationale to train on"))
            rows.append(row(variant.name, r, previous, previous, stats | {"trained": False, "student": s}))
            break
        request = TrainRequest(kind="reflection", name=name.replace("/", "-"), data=tuple(m.id for m in kept + mistakes),
                               base_adapter=adapter.adapter if adapter else None, lora=cfg.lora.asdict(),
                               seed=cfg.seed, hyper=ReflectionConfig(
                                   **cfg.train_settings.asdict(), reflection_weight=variant.reflection_weight,
                                   margin=cfg.margin, anchor=cfg.anchor, pool=cfg.pool).asdict())
        adapter = trainer.train(request, kept + mistakes, train)
        now = [v.correct for v in room.evaluate(f"{name}/round {r}", test, adapter, student=s)]
        rows.append(row(variant.name, r, previous, now, stats | {"trained": True, "train": adapter.metrics,
                                                                "student": s}))
        gain = (sum(now) - sum(previous)) / len(now)
        previous = now
        if gain < cfg.min_gain:
            break
    return rows


def diff(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after}


def row(variant: str, r: int, before: list[bool], after: list[bool], stats: dict) -> dict:
    """One round's held-out outcome: accuracy, and problems fixed / newly broken since the last round."""
    return {"variant": variant, "round": r} | accuracy(after) | {
        "fixed": sum(not a and b for a, b in zip(before, after)),
        "introduced": sum(a and not b for a, b in zip(before, after))} | stats


def tailored_report(room: Classroom, cfg: TailoredConfig, n_train: int, n_test: int, rows: list[dict],
                    students: list[str]) -> Report:
    t = room.name_of(Teacher)
    cohort = len(students) > 1
    if cohort:  # each student's rows, then the cohort's: every student's held-out answers pooled, round by round
        pooled = []
        for v in cfg.variants:
            for r in sorted({x["round"] for x in rows if x["variant"] == v.name}):
                xs = [x for x in rows if x["variant"] == v.name and x["round"] == r]
                if len(xs) == len(students):
                    c, n = sum(x["correct"] for x in xs), sum(x["n"] for x in xs)
                    p, lo, hi = wilson(c, n)
                    pooled.append({"variant": v.name, "round": r, "student": f"cohort of {len(students)} (pooled)",
                                   "correct": c, "n": n, "accuracy": p, "ci": [lo, hi]})
        rows = rows + pooled
    anchor = ("the correct rationale, positive: another correct rationale of the question (the authors' code)"
              if cfg.anchor == "rationale" else "the question prompt, positive: the rationale (departure)")
    weights = {v.name: v.reflection_weight for v in cfg.variants}
    per_round = []
    for x in rows:
        tu, kept = x.get("teacher"), "kept" in x
        per_round.append(([x["student"]] if cohort else []) + [
                          x["variant"], f"{weights[x['variant']]:g}", x["round"], Acc(x["correct"], x["n"]),
                          x.get("fixed") if x["round"] else None, x.get("introduced") if x["round"] else None,
                          x.get("train_mistakes"), f"{x['kept']} / {x['rationales']}" if kept else None,
                          ", ".join(f"{k}: {v}" for k, v in x.get("dropped", {}).items()) or None,
                          round(tu["calls"]) if tu else None,
                          f"{tu['prompt_tokens']:.0f} / {tu['completion_tokens']:.0f}" if tu else None])
    training = [([x["student"]] if cohort else []) + [x["variant"], x["round"], round(m["examples"]), round(m.get("with_triplet", m["with_negative"])),
                 round(m["steps"]), m["sft_loss"], f"{m['first_reflection_term']:.3f} → {m['last_reflection_term']:.3f}",
                 round(m["seconds"])] for x in rows if x.get("trained") for m in [x["train"]]]
    series = []
    for who in (students + [f"cohort of {len(students)} (pooled)"] if cohort else [None]):
        for v in cfg.variants:
            xs = [x for x in rows if x["variant"] == v.name and (who is None or x["student"] == who)]
            series.append(Series(label=(f"{who} / " if who else "") + f"{v.name} (λ={v.reflection_weight})",
                                 x=[float(x["round"]) for x in xs], y=[x["accuracy"] for x in xs],
                                 low=[x["ci"][0] for x in xs], high=[x["ci"][1] for x in xs]))
    return Report(
        title=f"Tailored learning: {room.config.run.name}",
        lines=[f"- self-reflection: anchor = {anchor}; negative: the student's wrong solution the rationale answers; "
               f"read at {'the EOS token' if cfg.pool == 'last' else 'the mean over the rationale (departure)'}; "
               f"margin {cfg.margin}" + (" (the authors' 1.0)" if cfg.margin == 1.0 else " (departure: the authors' is 1.0)"),
               "- data per round: that round's verified tailored rationales only, continuing the previous round's "
               "adapter; round 1 starts from the untrained student (no CoT-distillation stage), as the authors' README",
               "- mistakes: the student's greedy answer, one per training problem (the authors sample 4 and keep the "
               "distinct wrong ones); SFT loss on the rationale only (the authors also weight the prompt 0.1)", "",
               ("Students " + ", ".join(f"`{s}` ({room.describe(s)})" for s in students) if cohort else
                f"Student `{room.config.agents[students[0]].model}`") + f", teacher `{t}` ({room.describe(t)}, "
               f"shown the {cfg.answer_key}); {n_train} training problems, {n_test} held out; "
               f"{cfg.rationales_per_mistake} rationales per mistake; up to {cfg.max_rounds} rounds, stopping when the "
               f"held-out gain is below {cfg.min_gain}."],
        tables=[Table("Held-out accuracy per round", ["student"] * cohort + [
                                                      "variant", "λ", "round", "accuracy [95% CI]", "fixed", "introduced",
                                                      "train mistakes", "rationales kept / written", "dropped (why)",
                                                      "teacher generations", "teacher tokens in / out"], per_round,
                      note="Fixed / introduced: held-out problems that went wrong → right / right → wrong since the "
                           "previous round.")]
        + ([Table("Training", ["student"] * cohort + ["variant", "round", "examples", "with a reflection triplet", "steps", "SFT loss",
                               "reflection term first → last", "seconds"], training)] if training else []),
        figures=[Figure(name="accuracy_per_round", title=f"Held-out accuracy per round ({n_test} problems)",
                        xlabel="round", ylabel="accuracy", series=series, xticks=sorted({float(x["round"]) for x in rows}))],
        metrics={"rounds": rows})
