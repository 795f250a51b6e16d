"""Self-Explore (self-explore.md; the authors' code: hbin0701/Self-Explore): step-level preference pairs from the
student's own first pits.

1. FT: SFT the student on the gold solutions of the training problems.
2. The FT student samples ``samples`` attempts per training problem; the verifier grades them.
3. RFT start (``start = "rft"``, the paper): the correct samples whose written equations hold (the authors'
   ``is_eq_correct``; ``check_equations = false`` keeps them all), each text once, deduplicated by their equations
   (at most ``rft_keep`` per problem), with the gold solutions train a fresh adapter from the base model.
   ``start = "sft_gold"``: FT is the start.
4. Outcome pairs: each kept correct sample against the wrong sample of its problem most different from it
   (largest edit distance, each wrong sample used once), as the authors' ``get_dpo_data``.
5. The explorer (the start's model and adapter, or a teacher's model) rolls out from the step prefixes s1..st of
   the rejected sample of every outcome pair, t = 1..n (the whole attempt too, as the authors'
   ``gen_step_explore.py``), to find its first pit, a rollout counting only where its own text states the gold
   answer; and makes a step-level pair: prompt + steps before the pit, chosen = the shortest correct completion
   from there (a pit at step 1: the correct sample of the outcome pair), rejected = the pit step; pairs
   deduplicated per problem (``form_gpair``). ``unmeasured = "drop"`` or ``"last_step"`` do not roll out from
   the whole attempt (departures: the attempts whose pit is their last step are then dropped, or their pit
   deduced).
6. DPO from the start on the step-level pairs (Self-Explore) and on the outcome pairs (the baseline).
7. Evaluate on held-out problems: base, FT, RFT, outcome-level DPO, step-level DPO.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import msgspec

from schoolroom.api import (Classroom, Config, DPOConfig, Explorer, Figure, LoRAConfig, Note, Pending, PreferencePair,
                            Problem, Report, Search, SFTConfig, Series, StepRewards, Student, Table, Teacher,
                            TrainRequest, TrainResult, Unmeasured, compare, dedupe_pairs, gold_rationale, protocol,
                            training_table)
from schoolroom.protocols.self_explore_data import (  # noqa: F401
    as_rationale,
    equations,
    equations_hold,
    outcome_pairs,
    rft_keep,
)


class SelfExploreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    train: str = "train"
    eval: str = "eval"
    start: Literal["rft", "sft_gold"] = "rft"  # rft (the paper) | sft_gold: SFT on the gold solutions only
    samples: int = 4  # attempts per training problem from the FT model (the authors: 100)
    rft_keep: int = 8  # correct samples kept per problem for RFT and outcome pairs (the authors: 8)
    check_equations: bool = True  # drop correct samples whose written equations are false (the authors' is_eq_correct)
    temperature: float = 0.7  # for sampling attempts and rollouts
    k: int = 4  # rollouts per step prefix
    search: Search = "linear"  # linear (the paper) | binary
    # the last step (the whole wrong attempt): rollout = roll out from it too, its pit measured (the authors) |
    # drop = not rolled out, an attempt whose earlier prefixes all reach the answer dropped (departure) |
    # last_step = not rolled out, that attempt's pit put at its last step (departure: deduced, not measured)
    unmeasured: Unmeasured = "rollout"
    # student: the explorer runs the start's adapter; teacher: a teacher's model (oracle)
    completer: Literal["student", "teacher"] = "student"
    teacher: str | None = None  # completer = teacher: which teacher agent (default: the only one)
    max_explore: int | None = None  # explore at most this many wrong attempts
    lora: LoRAConfig = LoRAConfig()
    sft: SFTConfig = SFTConfig()  # for FT and RFT
    dpo: DPOConfig = DPOConfig()
    evaluate_base: bool = True
    seed: int = 0


def check(config: Config, cfg: SelfExploreConfig) -> None:
    """The completer must continue the prefix it is given, with the model the setting names."""
    explorers = [(n, a) for n, a in config.agents.items() if a.role == "explorer"]
    if len(explorers) != 1:
        raise ValueError(f"self_explore needs one agent with role explorer, not {len(explorers)} - at `$.agents`")
    name, explorer = explorers[0]
    if explorer.engine == "reference":
        raise ValueError(f"the explorer's engine ignores the step prefix it must continue (reference answers with the "
                         f"gold solution): give it a model - at `$.agents.{name}.engine`")
    if cfg.completer == "teacher":
        teachers = [n for n, a in config.agents.items() if a.role == "teacher" and (cfg.teacher in (None, n))]
        if len(teachers) != 1:
            raise ValueError("completer = \"teacher\" completes with a teacher's model: name it with teacher = \"...\" "
                             "(an agent of role teacher) - at `$.protocol.teacher`")
        t = config.agents[teachers[0]]
        if (t.engine, t.model, t.base_url) != (explorer.engine, explorer.model, explorer.base_url):
            raise ValueError(f"completer = \"teacher\": the explorer must run teacher {teachers[0]}'s model "
                             f"({t.engine} {t.model}), not {explorer.engine} {explorer.model} - at `$.agents.{name}`")


@protocol("self_explore", SelfExploreConfig, check=check)
def self_explore(room: Classroom, cfg: SelfExploreConfig) -> Report:
    train, test = room.problems(cfg.train), room.problems(cfg.eval)

    gold = [gold_rationale(p) for p in train]
    ft = room.trainer.train(request("sft", "sft", gold, cfg.sft, cfg), gold, train)
    room.student.load(ft)
    attempts = room.student.solve(train, n=cfg.samples, temperature=cfg.temperature)
    correct = [v.correct for v in room.verifier.check(attempts, train)]
    kept = rft_keep([a for a, ok in zip(attempts, correct) if ok], cfg.rft_keep, cfg.check_equations)
    start = ft
    if cfg.start == "rft":
        data = gold + [as_rationale(a) for a in kept]
        start = room.trainer.train(request("sft", "rft", data, cfg.sft, cfg), data, train)

    whole_pairs = outcome_pairs(train, kept, [a for a, ok in zip(attempts, correct) if not ok])
    by_id = {a.id: a for a in attempts}
    explore = [(by_id[x.parents[1]], by_id[x.parents[0]]) for x in whole_pairs][: cfg.max_explore]
    if cfg.completer == "student":
        room.explorer.load(start)
    explored = room.explorer.explore([w for w, _ in explore], train, k=cfg.k, search=cfg.search,
                                     temperature=cfg.temperature, partners=[c for _, c in explore],
                                     unmeasured=cfg.unmeasured)
    step_pairs = dedupe_pairs([m for m in explored if isinstance(m, PreferencePair)])

    # the two DPO trainings are independent: started together (side by side on a trainer with replicas = 2)
    step_dpo, outcome_dpo = room.wait([dpo(room, "step_dpo", step_pairs, start, train, cfg),
                                       dpo(room, "outcome_dpo", whole_pairs, start, train, cfg)])

    models = ([("base", None)] if cfg.evaluate_base else []) + [("sft", ft)] + \
        ([("rft", start)] if cfg.start == "rft" else []) + [("outcome_dpo", outcome_dpo), ("step_dpo", step_dpo)]
    results = {name: room.evaluate(name, test, adapter)  # verdicts: compare() logs no second EvalReport
               for name, adapter in models if adapter is not None or name == "base"}
    room.student.load(None)
    return self_explore_report(room, cfg, train, test, attempts, correct, kept, explored, step_pairs, whole_pairs,
                               results, dict(models))


def request(kind: str, name: str, data: list, hyper: SFTConfig, cfg: SelfExploreConfig,
            base: TrainResult | None = None) -> TrainRequest:
    return TrainRequest(kind=kind, name=name, data=tuple(m.id for m in data), lora=cfg.lora.asdict(),
                        hyper=hyper.asdict(), seed=cfg.seed, base_adapter=base.adapter if base else None)


def dpo(room: Classroom, name: str, pairs: list[PreferencePair], start: TrainResult, train: list[Problem],
        cfg: SelfExploreConfig) -> Pending | None:
    """The DPO training started (None: no pairs, said in a Note)."""
    if not pairs:
        room.record(Note(kind="skipped", text=f"{name}: no preference pairs, nothing to train"))
        return None
    return room.trainer.train.submit(request("dpo", name, pairs, cfg.dpo, cfg, base=start), pairs, train)


def method(room: Classroom, cfg: SelfExploreConfig) -> list[str]:
    """The method's settings, stated first in the report (departures from the paper named)."""
    completer = "the student's own model with the start adapter (the paper)" if cfg.completer == "student" else (
        f"teacher `{cfg.teacher or room.name_of(Teacher)}` (`{room.describe(room.name_of(Explorer))}`; the paper's "
        "oracle ablation)")
    return [
        f"- start: **{cfg.start}**" + (" (the paper: RFT on deduplicated correct samples and the gold solutions)"
                                       if cfg.start == "rft" else " (departure: SFT on the gold solutions only, no RFT)"),
        f"- samples: {cfg.samples} per training problem from the FT model at temperature {cfg.temperature}; at most "
        f"{cfg.rft_keep} correct kept per problem, each text once, deduplicated by their equations"
        + (", those with a false equation dropped (the authors' `is_eq_correct`)" if cfg.check_equations
           else " (departure: samples with a false equation kept)"),
        f"- exploration: k = {cfg.k} rollouts per step prefix, {cfg.search} search"
        + (" (the paper)" if cfg.search == "linear" else " (departure: bisection)") + f"; completer: {completer}; "
        "a rollout counts where its own text states the gold answer (`####`, `\\boxed{}` or \"the answer is\"; "
        "the authors: \"The answer is\" on GSM8K)",
        "- chosen: the shortest correct completion from the prefix before the pit, not already chosen for the "
        "problem (a pit at step 1: the outcome pair's correct sample); rejected: the pit step; pairs deduplicated "
        "per problem (the authors' `form_gpair`)",
        {"rollout": "- the whole wrong attempt is rolled out from too, so a pit at the last step is measured; an "
                    "attempt from every prefix of which some rollout still reached the answer has no pit and is "
                    "dropped (the authors' `gen_step_explore.py` and `form_gpair`)",
         "drop": "- the whole wrong attempt is not rolled out from (departure: the authors do); an attempt whose "
                 "every rolled-out prefix still reached the answer is dropped, so no pair has its last step as the "
                 "pit",
         "last_step": "- the whole wrong attempt is not rolled out from (departure: the authors do); an attempt whose "
                      "every rolled-out prefix still reached the answer gets its pit at the last step (departure: "
                      "deduced from the answer check, not measured)"}[cfg.unmeasured],
        "- outcome-level baseline: each kept correct sample against the wrong sample of its problem farthest from "
        "it by edit distance, each wrong sample used once (the authors' `get_dpo_data`)",
    ]


def self_explore_report(room, cfg, train, test, attempts, correct, kept, explored, step_pairs, whole_pairs, results,
                        adapters) -> Report:
    rewards = [m for m in explored if isinstance(m, StepRewards)]
    found_pairs = [m for m in explored if isinstance(m, PreferencePair)]
    pits = [r.first_pit for r in rewards if r.first_pit is not None]
    tokens = sum(r.tokens for r in rewards)
    explored_problems = len({r.problem_id for r in rewards})
    untrained = {n: "not trained: no pairs" for n in ("outcome_dpo", "step_dpo") if adapters.get(n) is None}
    accuracy_table, accuracy, accuracy_fig = compare(results, "rft" if cfg.start == "rft" else "sft", seed=cfg.seed,
                                                     extra=untrained)
    hist = Counter(p + 1 for p in pits)
    sampled_acc = sum(correct) / max(1, len(correct))
    false_eq = sum(not equations_hold(a.prefix + a.text) for a, ok in zip(attempts, correct) if ok)
    no_pit = len(rewards) - len(pits)
    last = sum(r.first_pit is not None and r.first_pit == len(r.rewards) - 1 for r in rewards)
    relative = [r.first_pit / (len(r.rewards) - 1) for r in rewards if r.first_pit is not None and len(r.rewards) > 1]
    exploration = [
        ["attempts sampled on the training problems", f"{len(attempts)}, correct {sum(correct)} "
                                                      f"({100 * sampled_acc:.1f}%)"],
        ["correct samples with a false equation" + (" (dropped)" if cfg.check_equations else " (kept)"),
         false_eq],
        ["kept for RFT after deduplication", f"{len(kept)} on {len({a.problem_id for a in kept})} problems"],
        ["wrong attempts explored (the rejected side of outcome pairs)", f"{len(rewards)} on {explored_problems} "
                                                                         "problems"],
        ["first pit found", len(pits)],
        ["... of them at the last step" + {"rollout": " (measured: no rollout from the whole attempt reached the "
                                                      "answer)",
                                           "drop": " (none: the whole attempt is not rolled out)",
                                           "last_step": " (deduced: no rolled-out prefix failed)"}[cfg.unmeasured],
         last],
        ["no pit, dropped" + (": some rollout from every prefix, the whole attempt's too, reached the answer"
                              if cfg.unmeasured == "rollout" else
                              ": some rollout from every prefix but the whole attempt reached the answer"
                              if cfg.unmeasured == "drop" else " (attempts without steps)"), no_pit],
        ["step-level pairs found / after deduplication per problem", f"{len(found_pairs)} / {len(step_pairs)}"],
        ["outcome-level pairs", len(whole_pairs)],
        ["rollouts; rollout tokens (per explored attempt, per explored problem)",
         f"{sum(r.rollouts for r in rewards)}; {tokens} ({tokens / max(1, len(rewards)):.0f}, "
         f"{tokens / max(1, explored_problems):.0f})"],
        ["mean relative position of the first pit (0 = first step, 1 = last)",
         f"{sum(relative) / len(relative):.2f}" if relative else None]]
    tables = [accuracy_table, Table("Exploration", ["measure", "value"], exploration)]
    if hist:
        tables.append(Table("First-pit position", ["first pit at step"] + [str(s) for s in sorted(hist)],
                            [["attempts"] + [hist[s] for s in sorted(hist)]], note="Step number of the first pit, 1 = the first step."))
    tables.append(training_table(adapters))
    metrics: dict[str, Any] = {"accuracy": accuracy, "start": cfg.start, "unmeasured": cfg.unmeasured}
    metrics.update(sampled_accuracy=sampled_acc, false_equation_samples=false_eq, rft_kept=len(kept),
                   explored=len(rewards), pits=len(pits), last_step_pits=last, no_measured_pit=no_pit,
                   step_pairs_found=len(found_pairs), step_pairs=len(step_pairs), outcome_pairs=len(whole_pairs),
                   rollout_tokens=tokens,
                   rollout_tokens_per_explored_problem=tokens / max(1, explored_problems),
                   first_pit_histogram={str(k): v for k, v in sorted(hist.items())},
                   train_metrics={n: a.metrics for n, a in adapters.items() if a is not None})
    figs = [accuracy_fig]
    if hist:
        figs.append(Figure(name="first_pit", title="Where the student first goes wrong", xlabel="first pit at step",
                           ylabel="wrong attempts", kind="bar", xticks=[float(s) for s in sorted(hist)],
                           series=[Series(label="attempts", x=[float(s) for s in sorted(hist)],
                                          y=[float(hist[s]) for s in sorted(hist)])]))
    return Report(title=f"Self-Explore: {room.config.run.name}",
                  lines=method(room, cfg) + ["", f"Student `{room.model_of(Student)}`; "
                                                 f"{len(train)} training problems (`{cfg.train}`), {len(test)} held-out "
                                                 f"(`{cfg.eval}`)."],
                  tables=tables, metrics=metrics, figures=figs)
