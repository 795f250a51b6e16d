"""A report into a run directory: ``report.md`` with its cost and faults sections, ``metrics.json`` and a PNG per
figure, each file written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from schoolroom import log as loglib
from schoolroom.messages import Message, Note
from schoolroom.reporting.report import Report, draw, render
from schoolroom.reporting.sections import faults_markdown, precision_line, usage_markdown, usage_rows


def _finite(x: Any) -> Any:
    """NaN (an accuracy of nothing) as null: metrics.json stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def part_seconds(messages: list[Message], created: float, last_s: float) -> list[float]:
    """The compute seconds of each part of a run (the first, then each resume): an earlier part from its start
    to its last message on disk (logged, or journaled and logged later: messages keep the time they were made),
    which is where the crash ended it; the last part as measured (``last_s``). The time between parts, when
    nothing ran, is not counted."""
    starts = [created] + [m.data.get("started", m.time) for m in messages if isinstance(m, Note) and m.kind == "resumed"]
    out = []
    for a, b in zip(starts, starts[1:]):
        out.append(max((m.time for m in messages if a <= m.time < b), default=a) - a)
    return out + [last_s]


def _wall(parts: list[float]) -> str:
    if len(parts) == 1:
        return f"Wall time: {parts[0]:.0f} s"
    each = " + ".join(f"{s:.0f}" for s in parts)
    return (f"Wall time: {sum(parts):.0f} s of compute in {len(parts)} parts (the run, then {len(parts) - 1} "
            f"resume{'s' * (len(parts) > 2)}: {each} s; the time between them is not counted)")


def write_report(run_dir: Path, report: Report, wall_s: float, resumed: bool = False,
                 messages: list[Message] | None = None, parts: list[float] | None = None) -> None:
    """Report, metrics and plots into ``run_dir``; the cost table from ``messages`` (default: its log).
    ``parts``: the compute seconds of each part of a resumed run (default: ``wall_s``, one part)."""
    if messages is None:
        messages = loglib.read_all(run_dir / "messages.jsonl")
    parts = parts or [wall_s]
    metrics = dict(report.metrics, wall_s=round(sum(parts), 1), parts_s=[round(s, 1) for s in parts],
                   usage=usage_rows(messages), resumed=resumed)
    _write(run_dir / "metrics.json", json.dumps(_finite(metrics), indent=2, default=str))
    for fig in report.figures:
        _write(run_dir / f"{fig.name}.png", fig)
    for name, text in report.files.items():
        _write(run_dir / name, text)
    _write(run_dir / "report.md",
           render(report) + faults_markdown(messages) + "\n## Cost\n\n" + precision_line(messages) +
           usage_markdown(messages) +
           f"\n\n{_wall(parts)}; {len(messages)} messages in `messages.jsonl`; {os.cpu_count()} CPUs.\n")


def _write(path: Path, what) -> None:
    """Write a file whole or not at all (a temporary file renamed over it); a failure names the file."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        if isinstance(what, str):
            tmp.write_text(what, encoding="utf-8")
        else:
            draw(what, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from None
