"""Enriched instruction tuning (enriched-instruction-tuning.md).

The teacher reads each human solution of the training set and writes a plan (ERP: the
sub-goals, no numbers) and an enriched solution along that plan with the skipped steps filled
in (ERS); the verifier keeps enriched solutions that reach the gold answer. The student is
fine-tuned, each from the same base, on (a) the human solutions, (b) plan + human solution,
(c) the enriched solutions, (d) plan + enriched solution, and each is evaluated on the same
held-out problems. The enriched dataset is written to the run directory as JSONL.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

import msgspec

from schoolroom.api import (Classroom, LoRAConfig, Plan, Problem, Rationale, Report, SFTConfig, Student, Table, Teacher,
                            TrainRequest, Verdict, compare, protocol, solution_text)

VARIANTS = ("human", "erp", "ers", "erp+ers")


class EnrichedConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    train: str = "train"
    eval: str = "eval"
    variants: list[Literal["human", "erp", "ers", "erp+ers"]] = msgspec.field(default_factory=lambda: list(VARIANTS))
    evaluate_base: bool = True
    lora: LoRAConfig = LoRAConfig()
    train_settings: SFTConfig = SFTConfig()
    dataset_file: str = "enriched.jsonl"
    seed: int = 0


@protocol("enriched", EnrichedConfig)
def enriched(room: Classroom, cfg: EnrichedConfig) -> Report:
    train, test = room.problems(cfg.train), room.problems(cfg.eval)

    plans = room.teacher.plan(train)
    written = room.teacher.enrich(train, plans)
    verdicts = room.verifier.check(written, train)
    ers = {r.problem_id: r for r, v in zip(written, verdicts) if v.correct}

    results: dict[str, list[Verdict]] = {}  # compare() logs no second EvalReport for them
    if cfg.evaluate_base:
        results["base"] = room.evaluate("base", test)
    for variant in cfg.variants:
        data = [training_rationale(variant, p, plan, ers.get(p.problem_id)) for p, plan in zip(train, plans)]
        with room.stage(variant):
            adapter = room.trainer.train(TrainRequest(kind="sft", name=variant.replace("+", "_"),
                                                      lora=cfg.lora.asdict(), hyper=cfg.train_settings.asdict(),
                                                      seed=cfg.seed, data=tuple(r.id for r in data)), data, train)
        results[variant] = room.evaluate(variant, test, adapter)
    room.student.load(None)
    dropped = Counter(v.reason for v in verdicts if not v.correct)
    return enriched_report(room, cfg, train, test, plans, written, ers, dropped, results)


def training_rationale(variant: str, p: Problem, plan: Plan, ers: Rationale | None) -> Rationale:
    """The completion the student is trained on for ``p`` in ``variant`` (the human solution where the plan or
    the enriched solution is missing)."""
    human = solution_text(p.gold_steps, p.answer)
    body = ers.text if ers is not None and variant in ("ers", "erp+ers") else human
    if variant in ("erp", "erp+ers") and plan.steps:
        body = f"Plan:\n{plan.text}\n\nSolution:\n{body}"
    return Rationale(problem_id=p.problem_id, text=body, answer=p.answer, source=variant, parents=(p.id, plan.id))


def enriched_report(room, cfg, train, test, plans, written, ers, dropped, results) -> Report:
    table, accuracy, fig = compare(results, "human", seed=cfg.seed, header="trained on")
    with_digits = sum(any(ch.isdigit() for ch in "".join(p.steps)) for p in plans)
    repeating = sum(len(set(p.steps)) < len(p.steps) for p in plans)
    human = {p.problem_id: solution_text(p.gold_steps, p.answer) for p in train}
    copies = sum(" ".join(r.text.split()) == " ".join(human[pid].split()) for pid, r in ers.items())
    enrichment = [["plans written", f"{sum(bool(p.steps) for p in plans)} of {len(plans)} (mean "
                   f"{sum(len(p.steps) for p in plans) / max(1, len(plans)):.1f} sub-goals)"],
                  ["plans with a digit (the prompt asks for no numbers)", with_digits],
                  ["plans that repeat a line word for word", repeating],
                  ["enriched solutions written", len(written)], ["kept (gold answer)", len(ers)],
                  ["kept, the human solution word for word", copies],
                  ["dropped", ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"],
                  ["unparsable replies", len(train) - len(written)],
                  ["mean steps: human / enriched (kept)", f"{mean_steps(p.gold_steps for p in train):.1f} / "
                   f"{mean_steps(r.steps for r in ers.values()):.1f}"],
                  ["the enriched dataset", f"`{cfg.dataset_file}` ({len(train)} records)"]]
    limit = room.config.agents[room.name_of(Student)].max_tokens
    logged = room.logged()
    tokens = {name: [logged[v.attempt_id].tokens for v in verdicts] for name, verdicts in results.items()}
    answers = [[name, f"{sum(t) / max(1, len(t)):.1f}", f"{sum(n >= limit for n in t)} of {len(t)}"]
               for name, t in tokens.items()]
    metrics: dict[str, Any] = {"plans": sum(bool(p.steps) for p in plans), "enriched_written": len(written),
                               "enriched_kept": len(ers), "plans_with_digits": with_digits,
                               "plans_repeating": repeating,
                               "enriched_copies": copies, "dropped": dict(dropped), "accuracy": accuracy,
                               "answers_at_max_tokens": {name: sum(n >= limit for n in t) for name, t in tokens.items()}}
    records = [json.dumps({"problem_id": p.problem_id, "question": p.question, "human_solution": human[p.problem_id],
        "plan": list(plan.steps), "enriched_solution": ers[p.problem_id].text
        if p.problem_id in ers else None, "answer": p.answer}) for p, plan in zip(train, plans)]
    return Report(title=f"Enriched instruction tuning: {room.config.run.name}",
                  lines=[f"Teacher `{room.describe(room.name_of(Teacher))}`; {len(train)} training problems, "
                         f"{len(test)} held out."],
                  tables=[Table("Enrichment", ["measure", "value"], enrichment), table,
                          Table("Held-out answers", ["trained on", "mean tokens", f"at the student's max_tokens ({limit})"],
                                answers, note="An answer cut at max_tokens has no final answer of its own.")], metrics=metrics, figures=[fig],
                  files={cfg.dataset_file: "\n".join(records) + "\n"})


def mean_steps(steps) -> float:
    counts = [len(s) for s in steps]
    return sum(counts) / max(1, len(counts))
