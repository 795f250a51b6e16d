"""Run a protocol from a config into a run directory, or resume one.

A run directory holds ``config.toml`` (the config as resolved: repeat the run from it),
``messages.jsonl`` (every message, append-only), ``metrics.json``, ``report.md`` and a PNG
per figure.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec

from schoolroom import config as configlib
from schoolroom import log as loglib
from schoolroom.protocols import best_of_n, enriched, first_step, reinforce, self_explore, tailored  # noqa: F401  (registers them)
from schoolroom.messages import Call, Note, sequential_ids
from schoolroom.protocols.classroom import PROTOCOLS, Classroom, Figure, Report
from schoolroom.protocols.replay import usage_markdown, usage_rows


def _strip_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_strip_none(v) for v in x if v is not None]
    return x


def protocol_of(cfg: configlib.Config, source: str):
    raw = dict(cfg.protocol)
    name = raw.pop("name", None)
    if name not in PROTOCOLS:
        raise configlib.ConfigError(f"{source}: unknown protocol {name!r} - at `$.protocol.name`; "
                                    f"known: {', '.join(sorted(PROTOCOLS))}")
    fn, cls, check = PROTOCOLS[name]
    pcfg = configlib.decode_section(raw, cls, "protocol", source)
    if check is not None:
        try:
            check(cfg, pcfg)
        except ValueError as e:
            raise configlib.ConfigError(f"{source}: {e}") from None
    return name, fn, pcfg


def resolved(cfg: configlib.Config, name: str, pcfg) -> dict:
    out = msgspec.to_builtins(cfg)
    out["protocol"] = {"name": name, **msgspec.to_builtins(pcfg)}
    return _strip_none(out)


def orphaned(messages: list) -> list[str]:
    """Ids of agent messages after the log's last call record: the outputs of a call whose record the crash cut
    off. The resumed run asks that call again; replay leaves these out."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, Call)), default=-1)
    return [m.id for m in messages[last + 1:] if m.sender not in ("protocol", "environment", "runtime")]


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
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(fig.series) > 4:  # beside the plot, not over the lines
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    elif len(fig.series) > 1 or fig.kind == "line":
        ax.legend()
    f.tight_layout()
    f.savefig(path)
    plt.close(f)


def run(cfg: configlib.Config, source: str = "<config>", out: str | None = None, limit: int | None = None,
        resume: str | Path | None = None, reuse: dict[str, str] | None = None, progress=None) -> Path:
    """Run (or resume) the configured protocol; returns the run directory."""
    cfg = configlib.with_limit(cfg, limit)
    if reuse:
        cfg = msgspec.structs.replace(cfg, run=msgspec.structs.replace(cfg.run, reuse=dict(cfg.run.reuse) | reuse))
    name, fn, pcfg = protocol_of(cfg, source)
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "messages.jsonl").exists():
            raise FileNotFoundError(f"nothing to resume: no messages.jsonl in {run_dir}")
        previous = loglib.read_all(run_dir / "messages.jsonl")
        run_id = next((m.run_id for m in previous if m.run_id), run_dir.name)
        orphans = orphaned(previous)
    else:
        run_id = f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        run_dir = Path(out or cfg.run.out) / run_id
        run_dir.mkdir(parents=True, exist_ok=False)
        previous = []
        (run_dir / "config.toml").write_text(configlib.dump(resolved(cfg, name, pcfg)))
    reused = {agent: loglib.read_all(path) for agent, path in cfg.run.reuse.items()}
    writer = loglib.Writer(run_dir / "messages.jsonl", run_id=run_id)
    if resume and orphans:
        writer.write(Note(kind="orphaned", text=f"{len(orphans)} messages of a call cut short by the crash; "
                          "the call is asked again", run_id=run_id, sender="runtime", data={"ids": orphans}))
    t0 = time.perf_counter()
    room = None
    try:
        room = Classroom(cfg, writer, run_id, previous=previous, reuse=reused, progress=progress,
                         workdir=str(run_dir))
        with sequential_ids(run_id):  # what the protocol makes gets the same ids when the run is resumed
            report: Report = fn(room, pcfg)
    finally:
        if room is not None:
            room.close()
        writer.close()
    wall = time.perf_counter() - t0
    write_report(run_dir, report, wall, resumed=bool(resume))
    return run_dir


def _finite(x: Any) -> Any:
    """NaN (an accuracy of nothing) as null: metrics.json stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _span(messages) -> float:
    times = [m.time for m in messages]
    return max(times) - min(times) if times else 0.0


def write_report(run_dir: Path, report: Report, wall_s: float, resumed: bool = False) -> None:
    messages = loglib.read_all(run_dir / "messages.jsonl")
    metrics = dict(report.metrics, wall_s=round(wall_s, 1), usage=usage_rows(messages), resumed=resumed)
    (run_dir / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2, default=str))
    for fig in report.figures:
        draw(fig, run_dir / f"{fig.name}.png")
    for name, text in report.files.items():
        (run_dir / name).write_text(text)
    plots = "".join(f"\n![{f.title}]({f.name}.png)\n" for f in report.figures)
    (run_dir / "report.md").write_text(
        report.markdown + "\n" + plots + "\n## Cost\n\n" + usage_markdown(messages) +
        f"\n\nWall time: {wall_s:.0f} s" +
        (f" for this resumed part; {_span(messages):.0f} s from the first to the last logged message" if resumed else "") +
        "; "
        f"{len(messages)} messages in `messages.jsonl`; {os.cpu_count()} CPUs.\n")
