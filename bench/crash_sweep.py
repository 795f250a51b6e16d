"""Crash consistency: kill a real run (driver, Ray and every actor) at many moments, resume it, and check that the
resumed run is the uninterrupted one.

    .venv/bin/python bench/crash_sweep.py --points 20 [--config bench/crash_sweep.toml] [--out DIR]

1. Runs the config once without interruption (``schoolroom run CONFIG``): the baseline. Its log is watched as it
   grows (every ~10 ms) to get the timeline: when each line, each call record, metrics.json and report.md appeared.
2. ``--points`` times: starts the same run in a new session and SIGKILLs its whole process group at a moment taken
   from the baseline's timeline, then ``schoolroom resume RUN`` to the end. The moments cover every kind:
   ``startup`` (Ray starting, models loading: before the first call), ``between`` (the live log reaches the line
   count the baseline had right after call record i), ``mid-call`` (that, plus half the baseline seconds of call
   i+1, a generation), ``training`` (the same where call i+1 is trainer.train), ``report`` (the protocol finished:
   the last log line written, or metrics.json appeared but report.md not yet) and once ``recovery`` (the resume
   itself is killed mid-call and resumed again).
3. Every resumed run is checked against the baseline: metrics.json equal but for wall_s, resumed and the seconds
   fields (usage latency, training seconds: wall time); no message id twice in messages.jsonl; no call key of a
   non-effect call logged twice (an effect call, e.g. student.load, is asked again on resume by design); and no
   process of the killed run's session (raylet, gcs_server, actors) left behind: the ones left are killed and
   reported; and the resumed log's non-effect calls, in order, answer as the baseline's did (outputs' text,
   answers, verdicts, adapter names, training metrics; call keys and ids hold per-run message ids, so calls are
   matched by position). This last check found a resumed run naming its adapters ``-r0-`` (fixed).
4. Answers that had come back but were not yet logged at the kill (the log keeps the order asked, so an early
   answer waits behind a slower call asked before it) are read from the run's journal right after the kill; the
   resumed log must answer each of them with the journal's outputs and time, i.e. without asking it again.
   ``bench/crash_sweep_teacher.toml`` (a slow teacher beside a fast one and a student) makes many such answers.
   (An answer an actor had computed but the driver had not yet read when the kill came, a window of
   milliseconds, is not counted: nothing on disk tells of it.)

Prints a table of the kill moments and ``K/N resumed runs identical`` (asking a journaled answer again makes a run
not identical); exits 0 only when all are. The runs stay
in ``--out`` (``point07.run.log``, ``point07.resume.log`` beside each point's run directory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "schoolroom")
POLL_S = 0.01
GENERATION = {("student", "solve"), ("teacher", "tailor"), ("teacher", "rationales"), ("explorer", "explore")}
console = Console(highlight=False, width=int(os.environ.get("COLUMNS") or 240))


# ---------------------------------------------------------------- processes


def session_pids(sid: int) -> list[tuple[int, str]]:
    """Live processes (not zombies) of session ``sid``: the run's driver, Ray's daemons and its actors."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            state, session = fields[0], int(fields[3])
            if session != sid or state in ("Z", "X"):
                continue
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            out.append((int(d), cmd or stat[stat.index("(") + 1:stat.rindex(")")]))
        except (OSError, ValueError):
            continue
    return out


def short(cmd: str) -> str:
    name = cmd.split()[0].rsplit("/", 1)[-1] if cmd else "?"
    if name.startswith("python") and len(cmd.split()) > 1:
        name = cmd.split()[1].rsplit("/", 1)[-1]
    return cmd if cmd.startswith("ray::") else name


def launch(args: list[str], logfile: Path) -> subprocess.Popen:
    """``args`` in a session (and process group) of its own: its pid is the group to kill and the session to
    search for leftovers."""
    with open(logfile, "wb") as f:
        return subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def leftovers(sid: int, grace_s: float = 10.0) -> tuple[list[str], float]:
    """Processes of session ``sid`` still alive ``grace_s`` after its group was killed (actors have process
    groups of their own: they must notice on their own that the raylet is gone). Kills those left, by pid;
    returns what they were, and how long the session took to empty by itself (-1: it did not)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < grace_s:
        if not session_pids(sid):
            return [], time.monotonic() - t0
        time.sleep(0.25)
    left = session_pids(sid)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1.0)
    still = session_pids(sid)
    return [f"{pid} {short(cmd)}" + (" (survived SIGKILL)" if (pid, cmd) in still else "")
            for pid, cmd in left], -1.0


# ---------------------------------------------------------------- the log as it grows


class Tail:
    """Counts the complete lines of a growing log (a fresh run's: it only grows)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.lines, self.offset, self.partial = 0, 0, False

    def poll(self) -> int:
        if self.path is None:
            return self.lines
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.lines
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        return self.lines


def waiting_at_kill(run: Path) -> dict:
    """Answers that had come back and were on disk in the journal but not yet in the log (they waited behind a
    slower call asked before them): call key -> (the Call's time, its outputs). Without the journal a kill loses
    them and the resume asks them again."""
    journal = run / "journal.jsonl"
    if not journal.exists():
        return {}
    logged = {r["key"] for r in read_log(run) if r.get("type") == "call"}
    out = {}
    for line in journal.read_bytes().split(b"\n"):
        if line.startswith(b'{"type":"call"'):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn by the kill: that answer was not on disk
            if r["key"] not in logged:
                out[r["key"]] = (r["time"], r.get("outputs", []), f"{r['agent']}.{r['method']}")
    return out


def asked_again(records: list[dict], waiting: dict) -> list[str]:
    """Of the answers waiting in the journal at a kill, the calls the resumed log answers otherwise: with other
    outputs (new ids) or at another time (the journal's answer keeps the time it came)."""
    calls = {r["key"]: r for r in records if r.get("type") == "call"}
    return [name for key, (t, outputs, name) in waiting.items()
            if key not in calls or calls[key]["time"] != t or calls[key].get("outputs", []) != outputs]


def run_dir_in(out: Path) -> Path | None:
    dirs = [d for d in out.iterdir() if d.is_dir()] if out.exists() else []
    return dirs[0] if len(dirs) == 1 else None


def read_log(run: Path) -> list[dict]:
    out = []
    for line in (run / "messages.jsonl").read_bytes().split(b"\n"):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"type": "torn"})
    return out


# ---------------------------------------------------------------- the baseline and its timeline


@dataclass
class CallAt:
    i: int  # index among the baseline's call records
    line: int  # the log's line count right after this call record
    agent: str
    method: str
    round: int
    seconds: float
    key: str

    @property
    def name(self) -> str:
        return f"{self.agent}.{self.method}" + (f" r{self.round}" if self.round else "")


@dataclass
class Baseline:
    run: Path
    wall_s: float
    lines: int
    calls: list[CallAt]
    t_log: float  # seconds after start: messages.jsonl appeared
    t_first_call: float
    t_last_line: float
    t_metrics: float
    t_report: float
    metrics: dict
    roles: dict[str, str]
    line_times: list[tuple[int, float]]  # (line count, seconds after launch when the log first had it)

    def asked_before(self, i: int) -> int:
        """How many non-effect call records the baseline's log holds before call ``i``."""
        effect = effect_of(self.roles)
        return sum(not effect(c.agent, c.method) for c in self.calls[:i])

    def at(self, n: int) -> float:
        """Seconds after launch when the baseline's log first had at least ``n`` lines."""
        return next((t for k, t in self.line_times if k >= n), self.wall_s)


def roles_of(run: Path) -> dict[str, str]:
    cfg = tomllib.loads((run / "config.toml").read_text())
    return {name: a.get("role", name) for name, a in cfg.get("agents", {}).items()}


def baseline(config: str, out: Path, timeout_s: float) -> Baseline:
    out.mkdir(parents=True)
    t0 = time.monotonic()
    proc = launch([CLI, "run", config, "--out", str(out)], out.parent / "baseline.log")
    tail, run = Tail(), None
    t_log = t_metrics = t_report = None
    line_times: dict[int, float] = {}
    while proc.poll() is None:
        now = time.monotonic() - t0
        if now > timeout_s:
            os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit(f"the baseline ran past {timeout_s:.0f} s: see {out.parent / 'baseline.log'}")
        if run is None:
            run = run_dir_in(out)
            if run is not None:
                tail.path = run / "messages.jsonl"
        if run is not None:
            if t_log is None and tail.path.exists():
                t_log = now
            n = tail.poll()
            line_times.setdefault(n, now)
            if t_metrics is None and (run / "metrics.json").exists():
                t_metrics = now
            if t_report is None and (run / "report.md").exists():
                t_report = now
        time.sleep(POLL_S)
    wall = time.monotonic() - t0
    if proc.returncode != 0 or run is None or not (run / "report.md").exists():
        raise SystemExit(f"the baseline failed (exit {proc.returncode}): see {out.parent / 'baseline.log'}")
    left, _ = leftovers(proc.pid, grace_s=5.0)
    if left:
        console.print(f"[yellow]the baseline left {len(left)} processes of its session behind (killed): {left}")
    records = read_log(run)
    calls, line = [], 0
    for line, r in enumerate(records, start=1):
        if r.get("type") == "call":
            calls.append(CallAt(len(calls), line, r["agent"], r["method"], r.get("round", 0), r.get("seconds", 0.0),
                                r["key"]))
    b = Baseline(run=run, wall_s=wall, lines=len(records), calls=calls, t_log=t_log or 0.0, t_first_call=0.0,
                 t_last_line=0.0, t_metrics=t_metrics or wall, t_report=t_report or wall,
                 metrics=json.loads((run / "metrics.json").read_text()), roles=roles_of(run),
                 line_times=sorted(line_times.items()))
    b.t_first_call = b.at(calls[0].line) if calls else wall
    b.t_last_line = b.at(len(records))
    return b


# ---------------------------------------------------------------- kill points


@dataclass
class Point:
    kind: str  # startup | between | mid-call | training | report | recovery
    target: str
    order: float  # where on the timeline (seconds into the baseline): the sweep runs in this order
    line: int | None = None  # between / mid-call / training / report: kill once the log has this many lines ...
    delay_s: float = 0.0  # ... plus this
    metrics: bool = False  # report: kill once metrics.json exists
    expect_below: int | None = None  # the kill should land before the log has this many lines (the call in flight)
    resume_calls: int = 0  # recovery: kill the resume once the log holds this many non-effect call records ...
    resume_delay_s: float = 0.0  # ... plus this (late if it holds one more by then)
    # outcome
    lines_at_kill: int = 0
    landed: str = ""
    outlived: int = 0  # processes of the session alive just after the group kill (they should exit by themselves)
    emptied_s: float = 0.0  # ... and how long they took
    left: list[str] = field(default_factory=list)
    finished: bool = False
    resume_s: list[float] = field(default_factory=list)
    metrics_diff: list[str] = field(default_factory=list)
    dup_ids: int = 0
    dup_keys: list[str] = field(default_factory=list)
    reasked: Counter = field(default_factory=Counter)
    orphans: int = 0
    calls_diff: list[str] = field(default_factory=list)
    waiting: dict = field(default_factory=dict)  # key -> (time, outputs) of answers journaled, not logged, at a kill
    again: list[str] = field(default_factory=list)  # ... of those, the calls the resume asked again
    run: Path | None = None
    error: str = ""

    @property
    def identical(self) -> bool:
        return (self.finished and not self.metrics_diff and not self.dup_ids and not self.dup_keys
                and not self.calls_diff and not self.again)


def spread(candidates: list, k: int) -> list:
    if k <= 0 or not candidates:
        return []
    if k >= len(candidates):
        return list(candidates)
    return [candidates[min(len(candidates) - 1, int((j + 0.5) * len(candidates) / k))] for j in range(k)]


def counts(n: int, n_train_calls: int) -> dict[str, int]:
    """How many points of each kind: every kind at least once (from 6 points on), the rest between and mid-call."""
    order = ["startup", "mid-call", "between", "training", "report", "recovery"]
    if n <= len(order):
        return {k: int(i < n) for i, k in enumerate(order)}
    extra = max(1, n // 8)
    c = {"startup": min(2, extra), "training": min(2 * max(1, n_train_calls), extra), "report": min(2, extra),
         "recovery": 1}
    rest = n - sum(c.values())
    c["between"], c["mid-call"] = math.ceil(rest / 2), rest // 2
    return c


def kinds_first(cands: list[CallAt], k: int) -> list[CallAt]:
    """``k`` of the calls ``cands``: one of each agent.method (its middle occurrence) first, the rest spread."""
    by_name: dict[str, list[CallAt]] = {}
    for x in cands:
        by_name.setdefault(f"{x.agent}.{x.method}", []).append(x)
    one = sorted((xs[len(xs) // 2] for xs in by_name.values()), key=lambda x: x.i)
    if k <= len(one):
        return spread(one, k)
    rest = [x for x in cands if x not in one]
    return sorted(one + spread(rest, k - len(one)), key=lambda x: x.i)


def inside(cands: list[CallAt], k: int) -> list[tuple[CallAt, float]]:
    """``k`` moments inside the calls ``cands``: half-way into calls spread over the run; more points than calls
    go a quarter, then three quarters of the way in."""
    out = []
    for f in (0.5, 0.25, 0.75, 0.1, 0.9):
        take = spread(cands, min(k - len(out), len(cands)))
        out += [(x, f) for x in take]
        if len(out) >= k or not cands:
            break
    return sorted(out, key=lambda xf: (xf[0].i, xf[1]))


def plan(b: Baseline, n: int, only: set[str] | None) -> list[Point]:
    calls, start = b.calls, b.t_log
    t_call = {c.i: b.at(c.line) for c in calls}  # seconds into the baseline at which call record i was on disk
    c = counts(n, sum(b.roles.get(x.agent, x.agent) == "trainer" and x.method == "train" for x in calls))
    if only:
        kinds = [k for k in ("startup", "mid-call", "between", "training", "report", "recovery") if k in only]
        c = {k: 0 for k in c} | {k: n // len(kinds) + (i < n % len(kinds)) for i, k in enumerate(kinds)}
    points: list[Point] = []
    # startup: Ray starting (just after the log is opened), models loading (most of the way to the first call)
    # (timed from the log's header line, written before Ray starts, so that a slow machine still has a log)
    for f in [0.1, 0.7, 0.4, 0.9, 0.25, 0.55][:c.get("startup", 0)]:
        after = f * (b.t_first_call - start)
        what = "Ray starting" if f < 0.3 else "agents starting, models loading"
        points.append(Point("startup", f"+{after:.1f} s after the log opened ({what})", order=start + after, line=1,
                            delay_s=after, expect_below=calls[0].line))
    # between calls: right after call record i is on disk; after each kind of call (agent.method) first
    between = kinds_first(calls[:-1], c.get("between", 0))
    for x in between:
        points.append(Point("between", f"after call {x.i} ({x.name})", order=t_call[x.i], line=x.line,
                            expect_below=calls[x.i + 1].line))
    # mid-call: half-way (by the baseline's seconds) into a generation call
    gens = [x for x in calls[1:] if (x.agent in b.roles and (b.roles[x.agent], x.method) in GENERATION
                                      or (x.agent, x.method) in GENERATION) and x.seconds >= 1.0]
    for x, f in inside(gens, c.get("mid-call", 0)):
        prev = calls[x.i - 1]
        points.append(Point("mid-call", f"+{x.seconds * f:.1f} s into call {x.i} ({x.name}, {x.seconds:.0f} s)",
                            order=t_call[prev.i] + x.seconds * f, line=prev.line, delay_s=x.seconds * f,
                            expect_below=x.line))
    # training: inside trainer.train
    trains = [x for x in calls if b.roles.get(x.agent, x.agent) == "trainer" and x.method == "train"]
    if c.get("training", 0) and not trains:
        console.print("[yellow]the baseline has no trainer.train call: no 'training' kill point")
    for x, f in inside(trains, c.get("training", 0)):
        prev = calls[x.i - 1]
        points.append(Point("training", f"+{x.seconds * f:.1f} s into call {x.i} ({x.name}, {x.seconds:.0f} s)",
                            order=t_call[prev.i] + x.seconds * f, line=prev.line, delay_s=x.seconds * f,
                            expect_below=x.line))
    # report: the protocol finished (last log line on disk, no metrics yet); metrics.json there, report.md not yet
    for j in range(c.get("report", 0)):
        if j % 2 == 0:
            points.append(Point("report", "metrics.json appeared, report.md not yet", order=b.t_metrics,
                                metrics=True))
        else:
            points.append(Point("report", f"last log line ({b.lines}) written, before metrics.json",
                                order=b.t_last_line, line=b.lines))
    # recovery: crash mid-call at ~1/3 of the calls, resume, crash the resume mid-call at ~2/3, resume again.
    # Call keys hold message ids, which differ from run to run: the resume's moment is counted in non-effect call
    # records (each logged once, effect calls are logged again by the resume), plus the baseline's seconds since.
    if c.get("recovery", 0):
        first = next((x for x in gens if x.i >= len(calls) // 3), gens[0] if gens else calls[1])
        second = next((x for x in gens + trains if x.i >= 2 * len(calls) // 3 and x.i > first.i + 1), None) \
            or next((x for x in calls if x.i > first.i + 1), calls[-1])
        effect = effect_of(b.roles)
        before = next(x for x in reversed(calls[:second.i]) if not effect(x.agent, x.method))
        p0, f = calls[first.i - 1], 0.75  # (mid-call points are at 1/2 and 1/4)
        points.append(Point("recovery", f"+{first.seconds * f:.1f} s into call {first.i} ({first.name}); "
                            f"the resume +{second.seconds / 2:.1f} s into call {second.i} ({second.name})",
                            order=t_call[p0.i] + first.seconds * f, line=p0.line, delay_s=first.seconds * f,
                            expect_below=first.line, resume_calls=b.asked_before(before.i + 1),
                            resume_delay_s=t_call[second.i - 1] - t_call[before.i] + second.seconds / 2))
    points.sort(key=lambda p: p.order)
    return points


# ---------------------------------------------------------------- one point


def kill_when(proc: subprocess.Popen, ready, timeout_s: float) -> str:
    """Poll until ``ready()`` says kill (then SIGKILL the process group) or the process ends by itself.
    Returns "killed", "ended" (finished before the moment came) or "timeout"."""
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            return "ended"
        if ready():
            break
        if time.monotonic() - t0 > timeout_s:
            break
        time.sleep(POLL_S)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return "killed" if time.monotonic() - t0 <= timeout_s else "timeout"


class Trigger:
    """Kill once the log has ``line`` lines (+ ``delay_s``), once it holds ``calls`` non-effect call records
    (+ ``delay_s``), or once metrics.json exists."""

    def __init__(self, out: Path | None, run: Path | None = None, line: int | None = None, delay_s: float = 0.0,
                 metrics: bool = False, calls: int = 0, effect=None):
        self.out, self.run, self.line, self.delay_s = out, run, line, delay_s
        self.metrics, self.calls, self.effect = metrics, calls, effect
        self.tail = Tail(run / "messages.jsonl" if run else None)
        self.fired_at: float | None = None

    def asked(self) -> int:
        """Non-effect call records in the log now (the whole log is read: a resume may truncate a torn line)."""
        try:
            data = (self.run / "messages.jsonl").read_bytes()
        except OSError:
            return 0
        n = 0
        for line in data.split(b"\n"):
            if line.startswith(b'{"type":"call"'):
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                n += not self.effect(r["agent"], r["method"])
        return n

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.run is None and self.out is not None:
            self.run = run_dir_in(self.out)
            if self.run is not None:
                self.tail.path = self.run / "messages.jsonl"
        if not self.calls:
            self.tail.poll()
        if self.fired_at is None:
            if self.metrics:
                hit = self.run is not None and (self.run / "metrics.json").exists()
            elif self.calls:
                hit = self.asked() >= self.calls
            else:
                hit = self.line is not None and self.tail.lines >= self.line
            if hit:
                self.fired_at = now
        return self.fired_at is not None and now - self.fired_at >= self.delay_s


def sweep_point(p: Point, b: Baseline, out: Path, config: str, timeout_s: float) -> None:
    out.mkdir(parents=True)
    proc = launch([CLI, "run", config, "--out", str(out)], out.parent / f"{out.name}.run.log")
    trig = Trigger(out, line=p.line, delay_s=p.delay_s, metrics=p.metrics)
    how = kill_when(proc, trig, timeout_s)
    p.outlived = len(session_pids(proc.pid))  # actors have process groups of their own: they outlive the kill
    trig.tail.poll()
    p.lines_at_kill = trig.tail.lines
    p.run = trig.run or run_dir_in(out)
    if how == "ended":
        p.landed = "missed: the run finished before the moment came"
    elif how == "timeout":
        p.landed = f"missed: killed at the {timeout_s:.0f} s time limit"
    else:
        p.landed = landed(p)
    left, p.emptied_s = leftovers(proc.pid)
    p.left += left
    if p.run is None or not (p.run / "messages.jsonl").exists():
        # killed before the run directory had a log: nothing to resume; start it again as a user would
        p.error = "no log at the kill: nothing to resume (run directory not made yet)"
        return
    p.waiting |= waiting_at_kill(p.run)
    resume(p, b, timeout_s)


def landed(p: Point) -> str:
    if p.metrics:
        return "report.md not yet written" if not (p.run / "report.md").exists() else "report.md already written"
    if p.kind == "report":
        return "before metrics.json" if not (p.run / "metrics.json").exists() else "metrics.json already there"
    if p.expect_below is not None and p.lines_at_kill >= p.expect_below:
        return "late: the call had finished"
    return "as planned"


def resume(p: Point, b: Baseline, timeout_s: float) -> None:
    log = p.run.parent.parent / f"{p.run.parent.name}.resume.log"
    t0 = time.monotonic()
    proc = launch([CLI, "resume", str(p.run)], log)
    if p.resume_calls:  # recovery: crash the resume itself, then resume again
        trig = Trigger(None, run=p.run, calls=p.resume_calls, delay_s=p.resume_delay_s, effect=effect_of(b.roles))
        how = kill_when(proc, trig, timeout_s)
        p.resume_s.append(time.monotonic() - t0)
        late = trig.asked() > p.resume_calls
        p.landed += "; the resume: " + ({"ended": "missed: it finished before the moment came",
                                         "timeout": "missed: time limit"}.get(how) or
                                        ("late: the call had finished" if late else "as planned"))
        left, _ = leftovers(proc.pid)
        p.left += [f"(resume) {x}" for x in left]
        p.waiting |= waiting_at_kill(p.run)
        log = log.with_suffix(".2.log")
        t0 = time.monotonic()
        proc = launch([CLI, "resume", str(p.run)], log)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    p.resume_s.append(time.monotonic() - t0)
    left, _ = leftovers(proc.pid, grace_s=5.0)
    p.left += [f"(after resume) {x}" for x in left]
    p.finished = proc.returncode == 0 and (p.run / "report.md").exists() and (p.run / "metrics.json").exists()
    if not p.finished:
        p.error = f"resume exit {proc.returncode}; see {log}"
    check(p, b)


# ---------------------------------------------------------------- checks


TIMING = {"wall_s", "parts_s", "resumed"}  # top level: wall time (of each part) and the resume flag


def timeless(metrics: dict) -> dict:
    """metrics.json without what measures wall time: wall_s, resumed, the usage rows' latency_s (seconds) and
    the trainer's ``seconds`` (rounds[].train.seconds); token and call counts stay."""

    def strip(x, top=False):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if not (top and k in TIMING) and k not in ("seconds", "latency_s")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(metrics, top=True)


def diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'missing in the resumed run' if k not in b else 'only in the resumed run'}")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items in the baseline, {len(b)} in the resumed run"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: baseline {a!r:.200}, resumed {b!r:.200}"]


def effect_of(roles: dict[str, str]):
    from schoolroom.agents.hosting.worker import is_effect

    return lambda agent, method: is_effect(roles.get(agent, agent), method)


_SAME = ("problem_id", "text", "answer", "correct", "predicted", "reason", "adapter", "failed")
_VERSION = re.compile(r"-[0-9a-f]{6}$")  # an adapter's version ends with its TrainRequest's id: per run


def _same(o: dict) -> dict:
    out = {k: o[k] for k in _SAME if k in o}
    if isinstance(out.get("adapter"), str):
        out["adapter"] = _VERSION.sub("-…", out["adapter"])
    if isinstance(o.get("metrics"), dict):
        out["metrics"] = {k: v for k, v in o["metrics"].items() if k != "seconds"}
    return out


def asked(records: list[dict], effect) -> list[tuple[str, object]]:
    """The non-effect calls of a log in order: their name and what they answered (the outputs' text, answers,
    verdicts, adapters and training metrics but seconds; ids and times differ from run to run)."""
    by_id = {r["id"]: r for r in records if "id" in r}
    out = []
    for r in records:
        if r.get("type") != "call" or effect(r["agent"], r["method"]):
            continue
        outs = [by_id.get(i, {}) for i in r.get("outputs", [])]
        same = [_same(o) for o in outs]
        out.append((f"{r['agent']}.{r['method']} r{r.get('round', 0)}", r.get("value") if r.get("shape") == "value"
                    else same))
    return out


def check(p: Point, b: Baseline) -> None:
    records = [r for r in read_log(p.run) if r.get("type") not in ("header", None)]
    ids = Counter(r["id"] for r in records if "id" in r)
    p.dup_ids = sum(n - 1 for n in ids.values() if n > 1)
    effect = effect_of(roles_of(p.run))
    seen: Counter = Counter()
    for r in records:
        if r.get("type") != "call":
            continue
        seen[r["key"]] += 1
        if seen[r["key"]] > 1:
            name = f"{r['agent']}.{r['method']}"
            if effect(r["agent"], r["method"]):
                p.reasked[name] += 1
            else:
                p.dup_keys.append(f"{name} r{r.get('round', 0)} {r['key']}")
    p.orphans = sum(len(r.get("data", {}).get("ids", [])) for r in records
                    if r.get("type") == "note" and r.get("kind") == "orphaned")
    p.again = asked_again(records, p.waiting) if p.finished else []
    if p.finished and (p.run / "journal.jsonl").exists():
        p.metrics_diff.append("the finished run left its journal behind")
    if p.finished:
        mine = json.loads((p.run / "metrics.json").read_text())
        p.metrics_diff = diff(timeless(b.metrics), timeless(mine), "metrics")
        if mine.get("resumed") is not True:
            p.metrics_diff.append("metrics.json was not written by the resume (resumed is not true)")
    # diagnosis: the baseline's non-effect calls in order against the resumed log's (call keys hold message ids,
    # which differ from run to run: calls are matched by position and name)
    base = asked([r for r in read_log(b.run) if r.get("type") != "header"], effect_of(b.roles))
    mine_calls = asked(records, effect)
    if [n for n, _ in base] != [n for n, _ in mine_calls]:
        j = next((i for i, (x, y) in enumerate(zip(base, mine_calls)) if x[0] != y[0]), min(len(base), len(mine_calls)))
        p.calls_diff.append(f"the calls differ from the baseline's at non-effect call {j}: baseline "
                            f"{base[j][0] if j < len(base) else '(end)'}, resumed "
                            f"{mine_calls[j][0] if j < len(mine_calls) else '(end)'} ({len(base)} vs {len(mine_calls)} calls)")
    for j, ((name, x), (_, y)) in enumerate(zip(base, mine_calls)):
        if x != y:
            what = "; ".join(diff(x, y, "outputs")[:3])
            p.calls_diff.append(f"non-effect call {j} ({name}) answered differently: {what}")
            if len(p.calls_diff) >= 4:
                break


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20, help="how many kill moments (default 20)")
    ap.add_argument("--config", default="bench/crash_sweep.toml")
    ap.add_argument("--out", help="where the runs go (default runs/crash_sweep-<time>)")
    ap.add_argument("--only", help="comma-separated kinds to sweep (startup, between, mid-call, training, report, "
                                   "recovery): for trying the sweep out")
    ap.add_argument("--timeout", type=float, default=0, help="seconds any one run or resume may take "
                                                               "(default: 10x the baseline, at least 600)")
    args = ap.parse_args()
    config = str(Path(args.config).resolve())
    out = Path(args.out or ROOT / "runs" / f"crash_sweep-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give another --out")
    only = {k.strip() for k in args.only.split(",")} if args.only else None
    t_sweep = time.monotonic()

    console.print(f"baseline: schoolroom run {args.config} --out {out / 'baseline'}")
    b = baseline(config, out / "baseline", timeout_s=args.timeout or 3600)
    timeout_s = args.timeout or max(600.0, 10 * b.wall_s)
    console.print(f"baseline wall time {b.wall_s:.1f} s: log opened at {b.t_log:.1f} s, first call record at "
                  f"{b.t_first_call:.1f} s, last of {b.lines} lines at {b.t_last_line:.1f} s, metrics.json at "
                  f"{b.t_metrics:.2f} s, report.md at {b.t_report:.2f} s; {len(b.calls)} call records "
                  f"({', '.join(f'{k} {v}' for k, v in Counter(c.name.split(' ')[0] for c in b.calls).items())})")
    points = plan(b, args.points, only)
    for n, p in enumerate(points, start=1):
        t = time.monotonic()
        console.print(f"[{n}/{len(points)}] {p.kind}: {p.target}", end="")
        try:
            sweep_point(p, b, out / f"point{n:02d}", config, timeout_s)
        except Exception as e:  # noqa: BLE001  (a broken point is reported, the sweep goes on)
            p.error = f"{type(e).__name__}: {e}"
        console.print(f" -> lines {p.lines_at_kill}, {p.landed or '-'}, "
                      f"{'identical' if p.identical else 'NOT identical'}"
                      f"{', answers differ' if p.calls_diff else ''} ({time.monotonic() - t:.0f} s)")

    table = Table(title=f"Crash sweep: {len(points)} kills of `schoolroom run {args.config}` "
                        f"(baseline {b.wall_s:.0f} s, {b.lines} log lines, {len(b.calls)} call records)")
    right, fold = {"justify": "right"}, {"overflow": "fold"}
    for col, kw in [("#", right), ("kind", {}), ("target", fold), ("log lines at kill", right), ("landed", fold),
                    ("resume finished", {}), ("metrics equal", {}), ("duplicates", {}), ("answers equal", {}),
                    ("re-asked calls", {}), ("answered, not logged at kill", right), ("asked again of those", right),
                    ("resume s", right), ("Ray left behind", fold)]:
        table.add_column(col, **kw)
    for n, p in enumerate(points, start=1):
        dups = "none" if not p.dup_ids and not p.dup_keys else \
            ", ".join(x for x in [f"{p.dup_ids} ids" if p.dup_ids else "", f"{len(p.dup_keys)} keys" if p.dup_keys else ""] if x)
        reasked = ", ".join(f"{v} {k}" for k, v in sorted(p.reasked.items())) or "none"
        if p.orphans:
            reasked += f"; {p.orphans} orphaned msgs"
        table.add_row(str(n), p.kind, p.target, f"{p.lines_at_kill}/{b.lines}", p.landed or p.error or "-",
                      "yes" if p.finished else "[red]NO", "yes" if p.finished and not p.metrics_diff else "[red]NO",
                      dups if dups == "none" else f"[red]{dups}",
                      "-" if not p.finished else "[yellow]no" if p.calls_diff else "yes", reasked,
                      str(len(p.waiting)), "-" if not p.finished else f"[red]{len(p.again)}" if p.again else "0",
                      "+".join(f"{s:.0f}" for s in p.resume_s) or "-",
                      f"[yellow]{len(p.left)} (killed)" if p.left else
                      f"none ({p.outlived} exited in {p.emptied_s:.1f} s)" if p.outlived else "none")
    console.print(table)
    for n, p in enumerate(points, start=1):
        if p.identical and not p.left:
            continue
        console.print(f"point {n} ({p.kind}, {p.target}): run {p.run}")
        for line in ([p.error] if p.error else []) + p.metrics_diff[:8] + \
                [f"duplicate non-effect call {k}" for k in p.dup_keys[:5]] + p.calls_diff + \
                [f"asked again though its answer was in the journal: {x}" for x in p.again[:5]] + \
                [f"left behind: {x}" for x in p.left]:
            console.print(f"  {line}")
    k = sum(p.identical for p in points)
    same = sum(p.finished and not p.calls_diff for p in points)
    console.print(f"{same}/{len(points)} resumed logs answer every non-effect call as the baseline did (compared in order: "
                  "the outputs' text, answers, verdicts, adapter names but their per-run id suffix, training metrics "
                  "but seconds)")
    waiting, again = sum(len(p.waiting) for p in points), sum(len(p.again) for p in points)
    console.print(f"{waiting} answers had come back but were not yet logged at the kills (a slower call asked before "
                  f"them was still out); the resumes asked {again} of them again")
    left = sum(bool(p.left) for p in points)
    console.print(f"sweep took {time.monotonic() - t_sweep:.0f} s; runs in {out}"
                  + (f"; {left} points left Ray processes behind (killed, listed above)" if left else
                     "; no Ray process was left behind by any kill"))
    console.print(f"{k}/{len(points)} resumed runs identical")
    return 0 if k == len(points) and points else 1


if __name__ == "__main__":
    sys.exit(main())
