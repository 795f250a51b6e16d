"""Report pieces protocols share: an accuracy table with intervals and paired differences, and its bar chart."""

from __future__ import annotations

from typing import Any

from schoolroom.protocols.classroom import Figure, Series
from schoolroom.protocols.stats import fmt_acc, fmt_diff, paired_difference, wilson


def compare(results: dict[str, list[bool]], baseline: str, seed: int = 0, header: str = "model",
            title: str = "Held-out accuracy", name: str = "accuracy") -> tuple[list[str], dict[str, Any], Figure]:
    """Markdown rows (accuracy [95% CI], difference vs ``baseline`` [95% CI]), metrics and a bar figure for
    outcomes on the same problems, in ``results`` order."""
    base = results.get(baseline)
    lines = [f"| {header} | accuracy [95% CI] | difference vs {baseline} [95% CI] |", "| --- | --- | --- |"]
    metrics: dict[str, Any] = {}
    series = Series(label="accuracy", x=[], y=[], low=[], high=[])
    for i, (label, outcomes) in enumerate(results.items()):
        p, lo, hi = wilson(sum(outcomes), len(outcomes))
        d = paired_difference(base, outcomes, seed=seed) if base is not None and label != baseline else None
        metrics[label] = {"correct": sum(outcomes), "n": len(outcomes), "accuracy": p, "ci": [lo, hi]}
        if d:
            metrics[label][f"difference_vs_{baseline}"] = {"mean": d[0], "ci": [d[1], d[2]]}
        lines.append(f"| {label} | {fmt_acc(sum(outcomes), len(outcomes))} | {fmt_diff(d) if d else '—'} |")
        series.x.append(float(i)), series.y.append(p), series.low.append(lo), series.high.append(hi)
    n = len(next(iter(results.values()), []))
    fig = Figure(name=name, title=f"{title} ({n} problems)", xlabel=header, ylabel="accuracy", series=[series],
                 xticks=list(series.x), xticklabels=list(results), kind="bar")
    return lines, metrics, fig
