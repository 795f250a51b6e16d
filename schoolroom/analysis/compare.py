"""Two runs side by side: their reported accuracies per round and condition, and the paired difference
(B − A, a bootstrap interval over problems) where both runs graded the same problems."""

from __future__ import annotations

from schoolroom.analysis.run import Run
from schoolroom.reporting.stats import fmt_acc, fmt_diff, paired_difference


def compare(a: Run, b: Run):
    """One row per (round, condition) either run reported: each run's correct/n and accuracy, the problems both
    graded, and B − A on them with its 95% interval (None where they share no problem)."""
    import pandas as pd

    acc = {name: run.accuracy().set_index(["round", "condition"]) for name, run in (("a", a), ("b", b))}
    oa, ob = a.reported(), b.reported()
    keys = list(dict.fromkeys(list(acc["a"].index) + list(acc["b"].index)))
    rows = []
    for key in keys:
        row = {"round": key[0], "condition": key[1]}
        for name in ("a", "b"):
            hit = acc[name].loc[key] if key in acc[name].index else None
            row[f"{name}_correct"] = None if hit is None else int(hit["correct"])
            row[f"{name}_n"] = None if hit is None else int(hit["n"])
        shared = sorted(oa.get(key, {}).keys() & ob.get(key, {}).keys())
        row["shared"] = len(shared)
        d = paired_difference([oa[key][p] for p in shared], [ob[key][p] for p in shared]) if shared else None
        row["difference"], row["ci_low"], row["ci_high"] = d if d else (None, None, None)
        rows.append(row)
    return pd.DataFrame(rows, columns=["round", "condition", "a_correct", "a_n", "b_correct", "b_n", "shared",
                                       "difference", "ci_low", "ci_high"])


def compare_markdown(a: Run, b: Run) -> str:
    df = compare(a, b)
    lines = [f"A: `{a.run_id}`  \nB: `{b.run_id}`", "",
             "| round | condition | A | B | problems both graded | B − A (95% CI) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in df.astype(object).where(df.notna(), None).itertuples():
        acc_a = fmt_acc(int(r.a_correct), int(r.a_n)) if r.a_n is not None else "—"
        acc_b = fmt_acc(int(r.b_correct), int(r.b_n)) if r.b_n is not None else "—"
        diff = fmt_diff((r.difference, r.ci_low, r.ci_high)) if r.difference is not None else "—"
        lines.append(f"| {r.round} | {r.condition} | {acc_a} | {acc_b} | {r.shared} | {diff} |")
    return "\n".join(lines)
