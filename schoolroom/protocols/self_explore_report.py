"""The self_explore protocol's report: the method's settings with the departures named, held-out accuracy of
every model against the start, the DPO settings side by side (step- against outcome-level at each, with the
reward margins DPO ended at), what the exploration found (pits, pairs, rollout tokens) and the trainings."""

from __future__ import annotations

from collections import Counter
from typing import Any

from schoolroom.api import (Acc, Classroom, Explorer, Figure, PreferencePair, Report, Series, StepRewards, Student, Table, Teacher,
                            compare, difference, fmt_diff, training_table)
from schoolroom.protocols.self_explore_data import dpo_settings, equations_hold


def method(room: Classroom, cfg) -> list[str]:
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


def self_explore_report(room: Classroom, cfg, train, test, attempts, correct, kept, explored, step_pairs, whole_pairs, results,
                        adapters) -> Report:
    rewards = [m for m in explored if isinstance(m, StepRewards)]
    found_pairs = [m for m in explored if isinstance(m, PreferencePair)]
    pits = [r.first_pit for r in rewards if r.first_pit is not None]
    tokens = sum(r.tokens for r in rewards)
    explored_problems = len({r.problem_id for r in rewards})
    untrained = {n: "not trained: no pairs" for n, a in adapters.items() if a is None and n != "base"}
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
    sweep, found = sweep_table(cfg, results, adapters, "rft" if cfg.start == "rft" else "sft")
    tables = [accuracy_table] + ([sweep] if sweep else []) + [Table("Exploration", ["measure", "value"], exploration)]
    if hist:
        tables.append(Table("First-pit position", ["first pit at step"] + [str(s) for s in sorted(hist)],
                            [["attempts"] + [hist[s] for s in sorted(hist)]], note="Step number of the first pit, 1 = the first step."))
    tables.append(training_table(adapters))
    metrics: dict[str, Any] = {"accuracy": accuracy, "start": cfg.start, "unmeasured": cfg.unmeasured,
                               "dpo_settings": {s or "dpo": h.asdict() for s, h in dpo_settings(cfg).items()}}
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
                  lines=[found, ""] + method(room, cfg) + ["", f"Student `{room.model_of(Student)}`; "
                                                 f"{len(train)} training problems (`{cfg.train}`), {len(test)} held-out "
                                                 f"(`{cfg.eval}`)."],
                  tables=tables, metrics=metrics, figures=figs)


def sweep_table(cfg, results: dict, adapters: dict, start: str) -> tuple[Table | None, str]:
    """The DPO settings side by side (None with one setting) and the report's first line: at the configured
    ``dpo``, step- against outcome-level DPO and each against the start, paired; then how many sweep points
    agree. Every point is evaluated on the same held-out problems, so picking the best one there is optimistic."""
    correct = {n: [v.correct for v in vs] for n, vs in results.items()}

    def diff(a: str, b: str):  # b − a, paired; None where either was not trained
        return difference(correct[a], correct[b], cfg.seed) if a in correct and b in correct else None

    def said(d) -> str:
        return "not trained" if d is None else fmt_diff((d.mean, d.low, d.high))

    settings = dpo_settings(cfg)
    rows, won, lost = [], 0, 0
    for suffix, h in settings.items():
        o, s = f"outcome_dpo{suffix}", f"step_dpo{suffix}"
        d = diff(o, s)
        won, lost = won + (d is not None and d.low > 0), lost + (d is not None and d.high < 0)
        ends = [" / ".join("—" if adapters.get(n) is None or adapters[n].metrics.get(key) is None
                           else f"{adapters[n].metrics[key]:+.2f}" for n in (o, s))
                for key in ("last_rewards_margins", "last_rewards_chosen")]
        rows.append([suffix[1:] or "dpo (configured)", f"{h.learning_rate:g}", f"{h.beta:g}", f"{h.epochs:g}"]
                    + [Acc(sum(correct[n]), len(correct[n])) if n in correct else None for n in (o, s)]
                    + [diff(start, o), diff(start, s), d] + ends)
    found = (f"**Found** (paired 95% intervals, points; DPO at the configured settings, learning rate "
             f"{cfg.dpo.learning_rate:g}, beta {cfg.dpo.beta:g}): step-level vs outcome-level DPO "
             f"{said(diff('outcome_dpo', 'step_dpo'))}; outcome-level DPO vs {start} {said(diff(start, 'outcome_dpo'))}; "
             f"step-level DPO vs {start} {said(diff(start, 'step_dpo'))}")
    if len(settings) == 1:
        return None, found + "."
    found += (f". Across all {len(settings)} DPO settings, step-level beat outcome-level significantly at {won} and "
              f"lost significantly at {lost} (every setting is evaluated on the same held-out problems, so the best "
              "of them is an optimistic pick).")
    return Table("DPO settings", ["setting", "learning rate", "beta", "epochs", "outcome-level DPO", "step-level DPO",
                                  f"outcome − {start}", f"step − {start}", "step − outcome",
                                  "reward margin at the end (outcome / step)",
                                  "chosen reward at the end (outcome / step)"], rows,
                 note="Every setting trains both DPOs from the same start on the same pairs and is evaluated on the "
                      "same held-out problems. The reward margin and the chosen response's reward are DPO's last "
                      "logged values (TRL's rewards/margins and rewards/chosen, beta times the log-ratio to the "
                      "start): a negative chosen reward means the chosen responses lost likelihood too."), found
