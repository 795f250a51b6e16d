"""Replay: a run's own protocol again with its own resolved config, every call answered from its log and no agent
started (no model, no Ray), so the replayed report is the run's by construction; what differs from the run's own
report and metrics is listed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec

from schoolroom import config as configlib
from schoolroom import log as loglib
from schoolroom.classroom import loading
from schoolroom.classroom.callpath import Replaying
from schoolroom.classroom.room import Classroom
from schoolroom.classroom.runner import last_code, protocol_of
from schoolroom.errors import command
from schoolroom.messages import sequential_ids
from schoolroom.reporting.files import write_report
from schoolroom.reporting.report import Report


class Replayed(msgspec.Struct):
    """What ``replay`` did: where it wrote, how many calls the log answered, what differs from the run's own
    report and metrics (wall times aside; empty when they are equal), and messages the protocol made that the
    run did not log."""

    out: Path
    answered: int
    differences: list[str]
    unlogged: int


def replay(run_dir: str | Path, out: str | Path) -> Replayed:
    """Run a run's own protocol again with its own resolved config, every call answered from its log and no
    agent started (no model, no Ray); write report, metrics and plots into ``out``. Raises NotInLog naming the
    first call the log does not answer (a damaged log, or one another version of the protocol wrote)."""
    run_dir, out = Path(run_dir), Path(out)
    if out.resolve() == run_dir.resolve():
        raise ValueError("replay writes into a folder of its own, never over the run's files: give another --out")
    cfg, _ = configlib.load(run_dir / "config.toml")
    p, settings, where = protocol_of(cfg, str(run_dir / "config.toml"))
    messages, damage = loglib.read_until_damage(run_dir / "messages.jsonl")
    run_id = next((m.run_id for m in messages if m.run_id), run_dir.name)
    logged, code = last_code(messages), loading.fingerprint(p)
    if damage:
        hint = (f"the log is damaged at {damage}; everything before it was replayed. `{command()} resume {run_dir}` "
                "finishes the run")
    elif logged is not None and logged != code:
        hint = (f"protocol {p.name!r} has changed since this run: the log was written by its code {logged}, this is "
                f"{code}. Replay with the version that wrote the log, or run the experiment again")
    else:
        hint = (f"the run stopped before this call (`{command()} resume {run_dir}` finishes it), or the log was "
                f"written by another version of protocol {p.name!r}")
    memory = loglib.Memory()
    room = Classroom(cfg, memory, run_id, previous=messages, workdir=str(run_dir), replaying=Replaying(hint))
    t0 = time.perf_counter()
    try:
        with sequential_ids(run_id):
            report: Report = p.fn(room, settings)
    finally:
        room.close()  # no agent to stop; the room is no longer the one compare() reports to
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, report, time.perf_counter() - t0, messages=messages)
    return Replayed(out, room.answered, differences(run_dir, out), len(memory.messages))


def differences(run_dir: Path, out: Path) -> list[str]:
    """Where a replay's report and metrics differ from the run's own, wall times aside."""
    found = []
    for name in ("report.md", "metrics.json"):
        if not (run_dir / name).exists():
            found.append(f"the run has no {name} (it did not finish)")
            continue
        a, b = (_timeless(name, (d / name).read_text()) for d in (run_dir, out))
        if a != b:
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            found.append(f"{name} line {n + 1}: run {a[n] if n < len(a) else '(end)'!r}, "
                         f"replay {b[n] if n < len(b) else '(end)'!r}")
    for f in sorted(out.iterdir()):  # plots and files the report writes: byte for byte
        if f.name not in ("report.md", "metrics.json") and f.is_file():
            mine = run_dir / f.name
            if not mine.exists() or mine.read_bytes() != f.read_bytes():
                found.append(f"{f.name} differs from the run's" if mine.exists() else f"the run has no {f.name}")
    return found


def _timeless(name: str, text: str) -> list[str]:
    if name == "metrics.json":
        data = json.loads(text)
        for k in ("wall_s", "parts_s", "resumed"):
            data.pop(k, None)
        return json.dumps(data, indent=2).splitlines()
    return [ln for ln in text.splitlines() if not ln.startswith("Wall time:")]


