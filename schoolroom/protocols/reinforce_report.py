"""The reinforce protocol's report: reward models (their loss on their own training examples before and after,
how they rank the first rollouts, and a PRM trained on human labels checked on held-out problems), held-out
accuracy per arm against the start, and the RL curves (reward, sample accuracy, KL, entropy per iteration) that
show whether RL did anything."""

from __future__ import annotations

from typing import Any

from schoolroom.api import (AGGREGATIONS, AucCount, Classroom, Figure, Report, Series, Student, Table, TrainResult,
                            aggregate, auc, auc_count, compare, fmt, wilson)
from schoolroom.protocols.reward_models import departures, prm_heldout


def loss_cell(m: dict) -> str:
    """The loss on the same training examples before and after training, beside the base rate's (—: not measured,
    e.g. a loaded model)."""
    if m.get("loss_before") is None:
        return "—"
    return (f"{m['loss_before']:.3f} → {m['loss_after']:.3f} (base rate {m['loss_base_rate']:.3f}; "
            f"{m['loss_check_labels']:.0f} labels)")


def loss_line(kind: str, m: dict) -> str | None:
    """A line saying so when a reward model's loss did not fall on its own training examples, with what shows why:
    the base rate (the loss of predicting the mean label: learning nothing about the examples) and the
    accuracy before and after."""
    if m.get("loss_before") is None or m["loss_after"] < m["loss_before"]:
        return None
    return (f"- The {kind.upper()}'s loss on {m['loss_check_labels']:.0f} labels of its own training examples did not "
            f"fall ({m['loss_before']:.3f} → {m['loss_after']:.3f}; always predicting their mean label scores "
            f"{m['loss_base_rate']:.3f}; accuracy {m['accuracy_before']:.2f} → {m['accuracy_after']:.2f}): "
            + ("it ends no better than the base rate: it learned nothing about these examples beyond the share of "
               "positive labels" if m["loss_after"] >= m["loss_base_rate"] else
               "it ends below the base rate (it learned something) but above where it started") + ".")


def reward_model_table(models: dict[str, TrainResult], history: list[dict], arms) -> tuple[Table, dict]:
    """Each reward model's training, and how well it ranks the start policy's first-iteration rollouts: AUC of its
    score against the answer check over all of them / within a problem (0.5 is chance), with the problems and
    pairs the within-problem AUC rests on. A loaded model's training numbers were not measured in this run: —."""
    rows, metrics = [], {}
    for kind, result in models.items():
        m = result.metrics
        first = next((h for h in history if h["iteration"] == 1 and arms[h["arm"]].reward == kind), None)
        quality: dict[str, tuple[float | None, AucCount]] = {}
        if first is not None:
            problems = [a.problem_id for a in first["attempts"]]
            for how in ["orm"] if kind == "orm" else AGGREGATIONS:
                values = [r.score if how == "orm" else aggregate(r.rewards, how) for r in first["rewards"]]
                quality[how] = (auc(values, first["correct"]), auc_count(values, first["correct"], problems))
        counts = next(iter(quality.values()))[1] if quality else None
        rows.append([kind.upper(), result.adapter, fmt(m.get("examples"), ".0f"),
                     f"{fmt(m.get('labels'), '.0f')} ({fmt(m.get('positive_share'), '.2f')})", loss_cell(m),
                     fmt(m.get("seconds"), ".0f"),
                     ", ".join(f"{k} {fmt(a, '.2f')} / {fmt(w.value, '.2f')}" for k, (a, w) in quality.items()) or None,
                     None if counts is None else f"{counts.groups} problems, {counts.pairs} pairs"])
        metrics[kind] = {"train": m, "auc_iteration_1": {k: a for k, (a, _) in quality.items()},
                         "auc_iteration_1_within_problem": {k: w.value for k, (_, w) in quality.items()},
                         "auc_iteration_1_within_problem_counts": None if counts is None else
                         {"problems": counts.groups, "pairs": counts.pairs}}
    return Table("Reward models", ["model", "adapter", "examples", "labels (positive share)",
                                   "loss on its training examples: before → after", "seconds",
                                   "AUC on iteration-1 rollouts: all / within a problem",
                                   "within a problem: problems with both, pairs"], rows,
                 note="The loss is measured on the same training examples (a seeded sample) before the first step and "
                      "after the last; the base rate is the loss of always predicting their mean label. The AUC "
                      "within a problem compares only a correct and a wrong rollout of the same problem: — where no "
                      "problem had both."), metrics


def reinforce_report(room: Classroom, cfg, start: TrainResult | None, models: dict[str, TrainResult], tests: dict,
                     evals: dict, history: list[dict]) -> Report:
    arms = {a.name: a for a in cfg.arms}
    lines = [f"Student `{room.model_of(Student)}` from "
             f"`{start.adapter if start else 'the base model'}` ({cfg.start}); {cfg.iterations} iterations of "
             f"{cfg.batch} problems × {cfg.n} rollouts at temperature {cfg.temperature} from {', '.join(cfg.train)}"
             + (f" (mixed {cfg.mix})" if cfg.mix else "") + "; held out: "
             + ", ".join(f"{s} ({len(p)} problems)" for s, p in tests.items()) + ".", "",
             "Arms: " + "; ".join(f"`{a.name}` {a.algorithm.upper()} on the {a.reward} reward"
                                  + (f" ({'per step' if a.step_rewards else a.aggregate})" if a.reward == "prm" else "")
                                  for a in cfg.arms) + ".",
             "", f"PPO's reward is the arm's reward at the last token minus the KL penalty at every token (kl_coef "
                 f"{cfg.ppo.kl_coef}); GRPO's KL weight is beta {cfg.grpo.beta}."]
    if cfg.overlap:
        lags = [h["logprob_gap"] for h in history if h.get("iteration", 0) > 1 and "logprob_gap" in h]
        lines += ["", "Overlap (one step off-policy, not the paper's loop): iteration i+1's rollouts were written "
                      "by the adapter of i-1 while the trainer trained on iteration i's, and each update's ratio is "
                      "against their sampling log-probabilities. The policy's lag behind them, the mean absolute "
                      "log-prob gap per token from iteration 2 on: "
                      + (f"{sum(lags) / len(lags):.3f}." if lags else "not measured (no engine log-probabilities).")]
    rm_table, rm_metrics = reward_model_table(models, history, arms)
    tables: list[Table] = []
    metrics: dict[str, Any] = {"reward_models": rm_metrics, "accuracy": {}}
    if models:
        lines += ["", "Against the paper:", ""] + departures(room, cfg)
        lines += [x for x in (loss_line(k, r.metrics) for k, r in models.items()) if x]
        tables.append(rm_table)
        heldout = prm_heldout(room, cfg) if "prm" in models else None
        if heldout is not None:
            tables.append(heldout[0])
            metrics["prm_heldout"] = heldout[1]
    figures: list[Figure] = []
    for s in tests:
        final = {"start": evals["start", 0][s]}
        final |= {a.name: evals[a.name, cfg.iterations][s] for a in cfg.arms if (a.name, cfg.iterations) in evals}
        table, acc, fig = compare(final, "start", seed=cfg.seed, header="arm",
                                  title=f"Held-out accuracy after {cfg.iterations} iterations: {s}",
                                  name=f"accuracy_{s}" if len(tests) > 1 else "accuracy")
        tables.append(table)
        metrics["accuracy"][s] = acc
        figures.append(fig)
        series = []
        for a in cfg.arms:
            points = [(0, evals["start", 0][s])] + sorted((it, evals[name, it][s]) for name, it in evals
                                                          if name == a.name)
            ws = [wilson(sum(v.correct for v in x), len(x)) for _, x in points]
            series.append(Series(label=a.name, x=[float(it) for it, _ in points], y=[w[0] for w in ws],
                                 low=[w[1] for w in ws], high=[w[2] for w in ws]))
        figures.append(Figure(name=f"accuracy_per_iteration_{s}" if len(tests) > 1 else "accuracy_per_iteration",
                              title=f"Held-out accuracy during RL, {s}", xlabel="iteration", ylabel="accuracy",
                              series=series))
    metrics["iterations"] = [{k: v for k, v in h.items() if k not in ("attempts", "rewards", "correct")}
                             for h in history]  # numbers only
    tables.append(Table(
        "Per iteration", ["arm", "iteration", "reward", "sample accuracy", "KL", "entropy", "clip fraction",
                          "logprob gap", "training seconds"],
        [[h["arm"], h["iteration"], h.get("reward_mean"), h["sample_accuracy"], fmt(h.get("kl"), ".3g"),
          h.get("entropy"), h.get("clipfrac"), fmt(h.get("logprob_gap"), ".2g"), round(h.get("seconds", 0))]
         for h in history],
        note="Reward: the mean reward of the iteration's rollouts by the arm's own reward; sample accuracy: the share "
             "of them with the gold answer; KL: per-token KL(policy ‖ start) before the update (k3); entropy: per "
             "token, of the policy that sampled them; logprob gap: mean |the Trainer's old log-prob − the engine's "
             "sampling log-prob| per token (— where the engine gave none): near 0 when both see the same policy."))
    for key, label in (("reward_mean", "mean reward of the rollouts"), ("sample_accuracy", "sample accuracy"),
                       ("kl", "KL(policy ‖ start) per token"), ("entropy", "entropy per token")):
        series = [Series(label=a.name, x=[float(h["iteration"]) for h in history if h["arm"] == a.name and h.get(key) is not None],
                         y=[float(h[key]) for h in history if h["arm"] == a.name and h.get(key) is not None])
                  for a in cfg.arms]
        figures.append(Figure(name=f"rl_{key}", title=f"{label[0].upper()}{label[1:]} per iteration", xlabel="iteration",
                              ylabel=label, series=series))
    return Report(title=f"Let's Reinforce Step by Step: {room.config.run.name}", lines=lines, tables=tables,
                  metrics=metrics, figures=figures)
