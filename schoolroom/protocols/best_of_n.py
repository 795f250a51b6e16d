"""Best-of-N reranking: check a reward model before spending RL on it.

The start policy samples N attempts per held-out problem; the answer is picked by the ORM's score, by the PRM's
step scores under each aggregation (min, max, avg, prod, last), and, for comparison, by majority vote over the
stated answers; pass@N (any of the N correct) is the ceiling and the greedy answer the floor. Accuracy is also
given as N grows (the first n of the N samples), so the curve shows whether a verifier keeps up with voting.
Each selector's pick is set against a random one of the N samples (one line each, with an interval), and a PRM
trained on human labels is checked on the problems held out of its training (``prm_heldout``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from schoolroom.api import (AGGREGATIONS, Attempt, Classroom, Figure, Report, Series, StepRewards, Student, Table,
                            Verdict, aggregate, auc, auc_count, compare, fmt, fmt_auc, mean_interval, protocol,
                            to_number, wilson)
from schoolroom.protocols.reward_models import RewardModelSettings, departures, prm_heldout, reward_models
from schoolroom.protocols.start import start_policy, start_sets


class BestOfNConfig(RewardModelSettings, kw_only=True):
    eval: str = "eval"
    n: int = 8  # samples per problem
    temperature: float = 0.7
    verifiers: list[str] = msgspec.field(default_factory=lambda: ["orm", "prm"])  # reward models to rerank with

    def __post_init__(self):
        super().__post_init__()
        if set(self.verifiers) - {"orm", "prm"}:
            raise ValueError(f"verifiers are orm and/or prm, not {self.verifiers}")


@protocol("best_of_n", BestOfNConfig, check=start_sets)
def best_of_n(room: Classroom, cfg: BestOfNConfig) -> Report:
    test = room.problems(cfg.eval)
    start = start_policy(room, cfg)
    models = reward_models(room, cfg, start, set(cfg.verifiers))
    heldout = prm_heldout(room, cfg) if "prm" in cfg.verifiers else None
    greedy = room.evaluate("greedy", test, start)  # verdicts: compare() logs no second EvalReport
    room.student.load(start)
    samples = room.student.solve(test, n=cfg.n, temperature=cfg.temperature)
    correct = [v.correct for v in room.agent(cfg.checker).check(samples, test)]
    scores = {kind: room.agent(cfg.orm if kind == "orm" else cfg.prm).score(samples, test) for kind in cfg.verifiers}
    room.student.load(None)
    return best_of_n_report(room, cfg, len(test), samples, correct, scores, greedy, models, heldout)


def canonical(answer: str | None) -> str | None:
    """The answer as it votes: the number it states, else its text."""
    if answer is None:
        return None
    number = to_number(answer)
    return str(number) if number is not None else answer.strip().lower()


def majority(attempts: list[Attempt]) -> int:
    """The first attempt stating the most common answer (no answer never wins while another exists)."""
    votes = Counter(c for c in (canonical(a.answer) for a in attempts) if c is not None)
    if not votes:
        return 0
    top = votes.most_common(1)[0][0]
    return next(i for i, a in enumerate(attempts) if canonical(a.answer) == top)


def best(values: list[float | None]) -> int:
    """The first of the highest scores (unscored: lowest)."""
    keyed = [(-1e9 if v is None else v) for v in values]
    return keyed.index(max(keyed))


def selectors(scores: dict[str, list[StepRewards]]) -> dict[str, Any]:
    """name -> fn(attempts, their StepRewards by scorer) -> chosen index."""
    out: dict[str, Any] = {"majority": lambda a, s: majority(a)}
    if "orm" in scores:
        out["orm"] = lambda a, s: best([r.score for r in s["orm"]])
    if "prm" in scores:
        for how in AGGREGATIONS:
            out[f"prm-{how}"] = lambda a, s, how=how: best([aggregate(r.rewards, how) for r in s["prm"]])
    return out


def against_random(picked: list[bool], correct: list[bool], per: int, resamples: int = 4000, seed: int = 0
                   ) -> dict[str, Any]:
    """A selector's picks (one per problem) against picking one of the problem's ``per`` samples at random, whose
    expected accuracy is the share of them that is correct: the mean per-problem difference with a seeded 95%
    bootstrap interval over problems, and ``better``: True above the interval's 0, False below it, None inside."""
    shares = [sum(correct[i * per:(i + 1) * per]) / per for i in range(len(picked))]
    diff, lo, hi = mean_interval([float(p) - s for p, s in zip(picked, shares)], resamples, seed)
    return {"pick": sum(picked) / len(picked) if picked else None, "random": sum(shares) / len(shares) if shares else None,
            "difference": diff, "low": lo, "high": hi, "better": True if lo > 0 else False if hi < 0 else None}


def random_line(name: str, r: dict[str, Any], per: int) -> str:
    """One line: whether the selector picks better than a random one of the samples."""
    verdict = {True: "better than", False: "worse than", None: "no better than"}[r["better"]]
    return (f"{name} picks {verdict} a random one of its {per} samples: {100 * r['pick']:.1f}% against "
            f"{100 * r['random']:.1f}% expected of a random one (difference {100 * r['difference']:+.1f} points, 95% "
            f"interval [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] over problems).")


def best_of_n_report(room: Classroom, cfg: BestOfNConfig, n_problems: int, samples: list[Attempt],
                     correct: list[bool], scores: dict[str, list[StepRewards]], greedy: list[Verdict], models,
                     heldout=None) -> Report:
    per = cfg.n
    groups = [range(i * per, (i + 1) * per) for i in range(n_problems)]
    pick = selectors(scores)
    sizes = sorted({1, 2, 4, 8, 16, 32, 64, per} & set(range(1, per + 1)))
    curves: dict[str, list[float]] = {name: [] for name in ["pass@n", *pick]}
    results: dict[str, list[Verdict] | list[bool]] = {}
    for size in sizes:
        for name in curves:
            outcome = []
            for g in groups:
                idx = list(g)[:size]
                if name == "pass@n":
                    outcome.append(any(correct[i] for i in idx))
                else:
                    chosen = pick[name]([samples[i] for i in idx], {k: [v[i] for i in idx] for k, v in scores.items()})
                    outcome.append(correct[idx[chosen]])
            curves[name].append(sum(outcome) / len(outcome))
            if size == per:
                results[name if name != "pass@n" else f"pass@{per}"] = outcome
    ordered = {"greedy": greedy} | {k: v for k, v in results.items() if k != f"pass@{per}"} | {
        f"pass@{per}": results[f"pass@{per}"]}
    table, acc, fig = compare(ordered, "greedy", seed=cfg.seed, header="selector", title=f"Accuracy with {per} samples")
    problems = [a.problem_id for a in samples]
    values = {"orm": [r.score for r in scores["orm"]]} if "orm" in scores else {}
    if "prm" in scores:
        values |= {f"prm-{how}": [aggregate(r.rewards, how) for r in scores["prm"]] for how in AGGREGATIONS}
    quality = {k: auc(v, correct) for k, v in values.items()}
    counted = {k: auc_count(v, correct, problems) for k, v in values.items()}
    within = {k: c.value for k, c in counted.items()}
    tables = [table]
    if quality:
        tables.append(Table("How well each score ranks correct above wrong samples",
                            ["score", "AUC over all samples", "AUC within a problem"],
                            [[k, fmt(quality[k], ".2f"), fmt_auc(counted[k])] for k in values],
                            note="0.5 is chance; within a problem is what reranking sees: only the problems with "
                                 "both a correct and a wrong sample count, and it rests on the (correct, wrong) "
                                 "pairs within them (— where there was none)."))
    random_pick = {name: against_random(outcome, correct, per, seed=cfg.seed) for name, outcome in results.items()
                   if name != f"pass@{per}"}
    tables.append(Table(f"Against a random one of the {per} samples", [
        "selector", "accuracy of its pick", "expected of a random sample", "difference (points) [95%]", "verdict"],
        [[name, f"{100 * r['pick']:.1f}%", f"{100 * r['random']:.1f}%",
          f"{100 * r['difference']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]",
          {True: "better", False: "worse", None: "no better"}[r["better"]]] for name, r in random_pick.items()],
        note="A random sample's expected accuracy on a problem is the share of its samples that is correct; the "
             "interval resamples problems."))
    if heldout is not None:
        tables.append(heldout[0])
    tables.append(Table("Accuracy as N grows", ["selector"] + [f"n={s}" for s in sizes],
                        [[name] + [f"{100 * y:.1f}%" for y in ys] for name, ys in curves.items()]))
    g = wilson(sum(v.correct for v in greedy), len(greedy))[0]
    series = [Series(label=name, x=[float(s) for s in sizes], y=ys) for name, ys in curves.items()]
    series.append(Series(label="greedy", x=[float(s) for s in sizes], y=[g] * len(sizes)))
    curve = Figure(name="best_of_n", title="Accuracy of the picked sample as N grows", xlabel="N (samples)",
                   ylabel="accuracy", series=series, xticks=[float(s) for s in sizes])
    lines = [f"Student `{room.model_of(Student)}` ({cfg.start} start); {n_problems} problems "
             f"(`{cfg.eval}`), {per} samples each at temperature {cfg.temperature}; {sum(correct)} of {len(correct)} "
             "samples correct. Greedy: the start policy's greedy answer. Majority: the most common stated answer. "
             "ORM / PRM-x: the sample the reward model scores highest (PRM step scores aggregated by x). "
             f"pass@{per}: any sample correct (the ceiling)."]
    lines += [""] + [random_line(name.upper() if name == "orm" else f"PRM-{name[4:]}" if name.startswith("prm-")
                                 else name.capitalize(), r, per) for name, r in random_pick.items()]
    if models:
        lines += ["", "Reward models: " + "; ".join(f"{k.upper()} `{m.adapter}` " + (
                      f"({m.metrics['examples']:.0f} examples, {m.metrics['steps']:.0f} steps)" if m.metrics else
                      f"(loaded from {m.path})") for k, m in models.items()), ""] + departures(room, cfg)
    return Report(title=f"Best-of-N reranking: {room.config.run.name}", lines=lines, tables=tables,
                  figures=[fig, curve],
                  metrics={"accuracy": acc, "by_n": {"n": sizes} | curves, "auc": quality, "auc_within_problem": within,
                           "auc_within_problem_counts": {k: {"problems": c.groups, "pairs": c.pairs}
                                                         for k, c in counted.items()},
                           "against_random": random_pick, "prm_heldout": heldout[1] if heldout else None,
                           "reward_models": {k: m.metrics for k, m in models.items()}})
