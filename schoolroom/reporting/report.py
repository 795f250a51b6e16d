"""What a protocol returns and how it is shown: numbers in, markdown, metrics.json and plots out.

A protocol builds a :class:`Report` of data: a few lines saying what was run (its settings and every
departure from the paper), tables as rows, figures as series, and its metrics. The runner renders the
markdown, writes metrics.json and draws the figures.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import msgspec

from schoolroom.messages import EvalReport, Verdict
from schoolroom.reporting.stats import fmt, fmt_acc, fmt_diff, paired_difference, wilson

running: ContextVar[Any] = ContextVar("schoolroom_room", default=None)  # the Classroom a protocol runs in, if any


class Series(msgspec.Struct, frozen=True):
    label: str
    x: list[float]
    y: list[float]
    low: list[float] = []
    high: list[float] = []


class Figure(msgspec.Struct, frozen=True):
    """A plot a protocol asks for (``kind``: line or bar); the runner draws it to ``<name>.png``."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xticks: list[float] = []
    xticklabels: list[str] = []
    kind: str = "line"


class Acc(msgspec.Struct, frozen=True):
    """An accuracy cell: shown as ``62.5% [50.2, 73.4] (40/64)`` (Wilson 95% interval)."""

    correct: int
    n: int


class Diff(msgspec.Struct, frozen=True):
    """A paired difference cell (mean and 95% interval, fractions): shown as ``+6.2 [-1.6, +14.1]`` points."""

    mean: float
    low: float
    high: float


class Table(msgspec.Struct, frozen=True):
    """A table under its own heading: ``rows`` of cells (text as is, floats to 3 places, None as —, Acc and Diff
    with their intervals)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""  # a paragraph between the heading and the table


class Report(msgspec.Struct):
    title: str  # the first heading
    lines: list[str] = []  # what was run: settings, data, every departure from the paper (markdown lines)
    tables: list[Table] = []
    figures: list[Figure] = []
    metrics: dict[str, Any] = {}
    files: dict[str, str] = {}  # extra files for the run directory (name -> text), e.g. a dataset as JSONL
    markdown: str = ""  # free text after the tables (most reports need none)


def cell(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, Acc):
        return fmt_acc(x.correct, x.n)
    if isinstance(x, Diff):
        return fmt_diff((x.mean, x.low, x.high))
    if isinstance(x, float):
        return fmt(x)
    return str(x).replace("|", "\\|").replace("\n", " ")


def table_markdown(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return out + ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]


def render(report: Report) -> str:
    """The report's markdown: title, what was run, each table under its heading, the free text, the figures."""
    plots = [f"\n![{f.title}]({f.name}.png)" for f in report.figures]
    if not report.lines and not report.tables:  # a report written as markdown
        return "\n".join([report.markdown] + plots) + "\n"
    out = [f"# {report.title}", ""] + list(report.lines)
    for t in report.tables:
        out += ["", f"## {t.title}", ""] + ([t.note, ""] if t.note else []) + table_markdown(t.columns, t.rows)
    if report.markdown:
        out += ["", report.markdown]
    return "\n".join(out + plots) + "\n"


def draw(fig: Figure, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    f, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    width = 0.8 / max(1, len(fig.series))
    for i, s in enumerate(fig.series):
        yerr = None
        if s.low and s.high:
            yerr = [[max(0.0, y - lo) for y, lo in zip(s.y, s.low)], [max(0.0, hi - y) for y, hi in zip(s.y, s.high)]]
        if fig.kind == "bar":
            xs = [x + (i - (len(fig.series) - 1) / 2) * width for x in s.x]
            ax.bar(xs, s.y, width=width, yerr=yerr, capsize=4, label=s.label)
        else:
            ax.errorbar(s.x, s.y, yerr=yerr, marker="o", capsize=4, label=s.label)
    ax.set_title(fig.title, fontsize=10)
    ax.set_xlabel(fig.xlabel)
    ax.set_ylabel(fig.ylabel)
    if fig.xticks:
        ax.set_xticks(fig.xticks)
        if fig.xticklabels:
            long = sum(map(len, fig.xticklabels)) > 50  # would run into each other: tilt them
            ax.set_xticklabels(fig.xticklabels, rotation=30 if long else 0, ha="right" if long else "center")
    elif all(float(x).is_integer() for s in fig.series for x in s.x):  # iterations, rounds, N: no 1.25
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if all(y >= 0 for s in fig.series for y in s.y if y == y):  # accuracies, counts: from 0; rewards may be below
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(fig.series) > 4:  # beside the plot, not over the lines
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    elif len(fig.series) > 1 or fig.kind == "line":
        ax.legend()
    f.tight_layout()
    f.savefig(path)
    plt.close(f)


def accuracy(outcomes: list[bool]) -> dict[str, Any]:
    """An accuracy for metrics.json: correct, n, accuracy and its Wilson 95% interval."""
    p, lo, hi = wilson(sum(outcomes), len(outcomes))
    return {"correct": sum(outcomes), "n": len(outcomes), "accuracy": p, "ci": [lo, hi]}


def difference(base: list[bool] | None, outcomes: list[bool], seed: int = 0) -> Diff | None:
    """``outcomes`` minus ``base`` on the same problems (paired bootstrap); None without a base."""
    if base is None:
        return None
    return Diff(*paired_difference(base, outcomes, seed=seed))


def compare(results: dict[str, list[Verdict] | list[bool]], baseline: str, seed: int = 0, header: str = "model",
            title: str = "Held-out accuracy", name: str = "accuracy", note: str = "",
            extra: dict[str, str] | None = None) -> tuple[Table, dict[str, Any], Figure]:
    """A table (accuracy [95% CI], difference vs ``baseline`` [95% CI]), metrics and a bar figure for outcomes on
    the same problems, in ``results`` order; ``extra`` rows (label -> why) are listed as not measured.

    Outcomes are verdicts or bools. Inside a run each label's accuracy is also logged as an ``EvalReport`` named
    after it (what ``Run.accuracy()`` and the run's page read), listing its verdicts when given verdicts; verdicts
    another EvalReport already counts (``room.evaluate``) are not reported twice."""
    correct = {label: [v.correct if isinstance(v, Verdict) else bool(v) for v in vs] for label, vs in results.items()}
    base = correct.get(baseline)
    rows: list[list[Any]] = []
    metrics: dict[str, Any] = {}
    series = Series(label="accuracy", x=[], y=[], low=[], high=[])
    for i, (label, outcomes) in enumerate(correct.items()):
        m = metrics[label] = accuracy(outcomes)
        d = difference(base, outcomes, seed) if label != baseline else None
        if d:
            m[f"difference_vs_{baseline}"] = {"mean": d.mean, "ci": [d.low, d.high]}
        rows.append([label, Acc(m["correct"], m["n"]), d])
        series.x.append(float(i)), series.y.append(m["accuracy"]), series.low.append(m["ci"][0])
        series.high.append(m["ci"][1])
    rows += [[label, why, None] for label, why in (extra or {}).items()]
    n = len(next(iter(correct.values()), []))
    table = Table(title, [header, "accuracy [95% CI]", f"difference vs {baseline} [95% CI]"], rows, note)
    said = re.search(rf"\b{n} (\S+ )?problems?\b", title)  # "on all 8 problems": not "(8 problems)" again
    fig = Figure(name=name, title=title if said else f"{title} ({n} problems)", xlabel=header, ylabel="accuracy",
                 series=[series], xticks=list(series.x), xticklabels=list(results), kind="bar")
    report_each(results, metrics)
    return table, metrics, fig


def report_each(results: dict[str, list[Verdict] | list[bool]], metrics: dict[str, Any]) -> None:
    """Log an EvalReport per label in the running room (none outside a run), unless its verdicts were reported."""
    room = running.get()
    if room is None:
        return
    logged = room.logged()
    counted = [frozenset(m.verdicts) for m in logged.values() if isinstance(m, EvalReport) and m.verdicts]
    for label, values in results.items():
        a, ids = metrics[label], tuple(v.id for v in values if isinstance(v, Verdict))
        ids = ids if len(ids) == len(values) else ()
        # made even when not logged, so the ids after it are the same whether or not it was (a resumed run)
        report = EvalReport(name=label, n=a["n"], correct=a["correct"], accuracy=a["accuracy"], ci_low=a["ci"][0],
                            ci_high=a["ci"][1], verdicts=ids)
        if not ids or frozenset(ids) not in counted or report.id in logged:
            room.record(report)
            counted.append(frozenset(ids))


def training_table(adapters: dict[str, Any], title: str = "Training") -> Table:
    """One row per trained adapter (``name -> TrainResult``, None: not trained): its size, loss and time, each —
    where the training function did not measure it."""
    rows = [[a.adapter, name, a.metrics.get("examples", a.metrics.get("pairs")), a.metrics.get("steps"),
             a.metrics.get("first_loss"), a.metrics.get("last_loss"), a.metrics.get("seconds")]
            for name, a in adapters.items() if a is not None]
    rows = [[x if not isinstance(x, float) or i in (4, 5) else round(x) for i, x in enumerate(r)] for r in rows]
    return Table(title, ["adapter", "trained for", "examples", "steps", "first loss", "last loss", "seconds"], rows)
