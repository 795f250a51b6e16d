"""Run a protocol from a config into a run directory, or resume one.

A run directory holds ``config.toml`` (the config as resolved: repeat the run from it),
``messages.jsonl`` (every message, append-only), ``metrics.json``, ``report.md`` and a PNG
per figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import msgspec

from schoolroom import config as configlib
from schoolroom import log as loglib
from schoolroom.agents.runtime import start_ray
from schoolroom.errors import RunFailed, Terminated, command, one_line, plain
from schoolroom.messages import Call, Message, Note, sequential_ids
from schoolroom.protocols import preflight, registry
from schoolroom.protocols.classroom import Classroom
from schoolroom.protocols.journal import Journal
from schoolroom.protocols.replay import faults_markdown, usage_markdown, usage_rows
from schoolroom.protocols.report import Report, draw, render
from schoolroom.scalars import Sink

JOURNAL = "journal.jsonl"  # answers on disk as they come, before their turn in the log (see journal.py)


def _strip_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_strip_none(v) for v in x if v is not None]
    return x


def protocol_of(cfg: configlib.Config, source: str) -> tuple[registry.Protocol, Any, registry.Source]:
    """The config's protocol, its settings, and where it came from; every check made before anything starts."""
    return registry.resolve(cfg, source)


def resolved(cfg: configlib.Config, p: registry.Protocol, settings, where: registry.Source) -> dict:
    """The config as run: every default filled in, the protocol's file as an absolute path (or its module)."""
    out = msgspec.to_builtins(cfg)
    out["protocol"] = {"name": p.name, **where.keys, **msgspec.to_builtins(settings)}
    return _strip_none(out)


def load_protocol_of(run_dir: Path) -> None:
    """Import the protocol a run directory's config names (its file or module): what replay needs to read the
    message types it declared. A run without a readable config is read with the built-in types only."""
    path = Path(run_dir) / "config.toml"
    if path.exists():
        cfg, _ = configlib.load(path)
        registry.locate(dict(cfg.protocol), str(path))


def orphaned(messages: list) -> list[str]:
    """Ids of agent messages after the log's last call record: the outputs of a call whose record the crash cut
    off. The resumed run asks that call again; replay leaves these out."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, Call)), default=-1)
    return [m.id for m in messages[last + 1:] if m.sender not in ("protocol", "environment", "runtime")]


def last_code(messages: list) -> str | None:
    """The fingerprint of the protocol code that last wrote this log (None: a log older than the record)."""
    return next((m.data.get("code") for m in reversed(messages) if isinstance(m, Note) and m.kind == "protocol"), None)


def run(cfg: configlib.Config, source: str = "<config>", out: str | None = None, limit: int | None = None,
        resume: str | Path | None = None, reuse: dict[str, str] | None = None, progress=None,
        say=None) -> Path:
    """Run (or resume) the configured protocol; returns the run directory. Everything that can be checked first
    is (``preflight``: NotStarted, no run directory made); a failure after the start is a RunFailed whose
    traceback is in ``RUN/error.log``. ``say(text)`` hears what the run does besides its calls."""
    say = say or (lambda text: None)
    started = time.time()
    cfg = configlib.with_limit(cfg, limit)
    if reuse:
        cfg = msgspec.structs.replace(cfg, run=msgspec.structs.replace(cfg.run, reuse=dict(cfg.run.reuse) | reuse))
    p, settings, where = protocol_of(cfg, source)
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "messages.jsonl").exists():
            raise FileNotFoundError(f"nothing to resume: no messages.jsonl in {run_dir}")
        if finished(run_dir):  # nothing to do: no agent started, no model loaded
            say(f"{run_dir} has finished: its report is {run_dir / 'report.md'}")
            return run_dir
        preflight.check(cfg, source, resume=True)
        say(f"resuming {run_dir}: reading its log")
        previous = loglib.read_all(run_dir / "messages.jsonl", on_torn="ignore")  # the Writer cuts it, and warns
        run_id = next((m.run_id for m in previous if m.run_id), run_dir.name)
        orphans = orphaned(previous)
        calls = sum(isinstance(m, Call) for m in previous)
        journal = Journal(run_dir / JOURNAL, run_id)
        say(f"found {len(previous)} messages and {calls} answered calls in the log"
            + (f", and {len(journal.answers)} answer{'s' * (len(journal.answers) > 1)} not yet logged in the "
               "journal" if journal.answers else "")
            + ": they are not asked again"
            + (f"; {len(orphans)} messages of a call the crash cut short are set aside" if orphans else ""))
    else:
        preflight.check(cfg, source)
        run_id = f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        run_dir = Path(out or cfg.run.out) / run_id
        run_dir.mkdir(parents=True, exist_ok=False)
        previous = []
        (run_dir / "config.toml").write_text(configlib.dump(resolved(cfg, p, settings, where)))
        journal = Journal(run_dir / JOURNAL, run_id)
    reused = {agent: loglib.read_all(path) for agent, path in cfg.run.reuse.items()}
    writer = loglib.Writer(run_dir / "messages.jsonl", run_id=run_id)
    sink = None
    room = None
    sigterm = StopOnSigterm()
    t0 = time.perf_counter()
    try:
        if cfg.run.tensorboard or cfg.run.wandb_project:
            sink = Sink(run_dir, run_id, cfg.run.tensorboard, cfg.run.wandb_project,
                        resolved(cfg, p, settings, where))
            writer.listeners.append(sink)
        code = registry.fingerprint(p)
        if code != last_code(previous):  # which code wrote the log from here on (replay names a change)
            writer.write(Note(kind="protocol", text=f"protocol {p.name}, code {code}", run_id=run_id,
                              sender="runtime", data={"name": p.name, "code": code}))
        if resume:  # a new part of the run starts: its compute time is counted from here
            part = 1 + sum(isinstance(m, Note) and m.kind == "resumed" for m in previous)
            writer.write(Note(kind="resumed", text=f"resumed: part {part + 1} of the run", run_id=run_id,
                              sender="runtime", data={"started": started}))
        if resume and orphans:
            writer.write(Note(kind="orphaned", text=f"{len(orphans)} messages of a call cut short by the crash; "
                              "the call is asked again", run_id=run_id, sender="runtime", data={"ids": orphans}))
        with sigterm:
            if cfg.runtime.address != "inline":
                start_ray(cfg.runtime)  # which sets handlers of its own for SIGTERM
                sigterm.arm()
            room = Classroom(cfg, writer, run_id, previous=previous, reuse=reused, progress=progress,
                             workdir=str(run_dir), plugins=where.plugins, journal=journal)
            with sequential_ids(run_id):  # what the protocol makes gets the same ids when the run is resumed
                report: Report = p.fn(room, settings)
                room.wait_all()  # calls the protocol started and never waited for are answered and logged too
    except BaseException as e:
        e = sigterm.why(e)
        with contextlib.suppress(Exception):  # where this part of the run ended, for its compute time
            writer.write(Note(kind="stopped", text=one_line(e), run_id=run_id, sender="runtime"))
        _close(room, writer, sink, journal)
        raise failed(run_dir, e, journal) from e
    _close(room, writer, sink, journal)
    journal.remove()  # every answer in it is in the log now
    try:
        messages = loglib.read_all(run_dir / "messages.jsonl")
        head = loglib.header(run_dir / "messages.jsonl")
        parts = part_seconds(messages, head.created if head else started, time.perf_counter() - t0)
        write_report(run_dir, report, parts[-1], resumed=bool(resume), messages=messages, parts=parts)
    except BaseException as e:  # a full disk: the file is named; `resume` writes the report again
        raise failed(run_dir, e) from e
    return run_dir


def finished(run_dir: Path) -> bool:
    """The run wrote its report (the last file it writes) and nothing was logged after it."""
    report, log = run_dir / "report.md", run_dir / "messages.jsonl"
    return report.exists() and report.stat().st_mtime >= log.stat().st_mtime


class StopOnSigterm:
    """SIGTERM (a scheduler's preemption, ``kill``) stops the run as Ctrl-C does: Terminated is raised where the
    driver is, what is logged and journaled is kept, and the resume command is said. Ray sets handlers of its
    own when it starts (a stack dump, then exit 1): ``arm()`` puts this one back. Ray's ``wait`` turns any
    exception a handler raises into KeyboardInterrupt, so ``received`` says it was SIGTERM."""

    def __init__(self):
        self.received = False
        self.before = None
        self.main = threading.current_thread() is threading.main_thread()  # only it may set handlers

    def _stop(self, signum, frame):
        self.received = True
        raise Terminated()

    def arm(self) -> None:
        if self.main:
            handler = signal.signal(signal.SIGTERM, self._stop)
            self.before = handler if self.before is None else self.before

    def __enter__(self) -> StopOnSigterm:
        self.arm()
        return self

    def __exit__(self, *exc) -> None:
        if self.main:
            signal.signal(signal.SIGTERM, self.before if self.before is not None else signal.SIG_DFL)

    def why(self, e: BaseException) -> BaseException:
        """``e``, or the Terminated it stands for."""
        if self.received and not isinstance(e, Terminated):
            t = Terminated()
            t.__cause__ = e
            return t
        return e


def _close(room, writer, sink, journal=None) -> None:
    if room is not None:
        room.close()
    writer.close()
    if sink is not None:
        sink.close()
    if journal is not None:
        journal.close()


def failed(run_dir: Path, e: BaseException, journal: Journal | None = None) -> RunFailed:
    """The traceback appended to ``RUN/error.log``; the RunFailed a person reads."""
    path = run_dir / "error.log"
    text = plain("".join(traceback.format_exception(e)))
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n{text}\n")
    except OSError as err:  # a full disk: the traceback goes to the temp folder instead
        path = Path(tempfile.gettempdir()) / f"schoolroom-error-{run_dir.name}.log"
        path.write_text(text + f"\n({run_dir / 'error.log'} could not be written: {err.strerror})\n")
    journaled = 0
    if journal is not None and journal.path.exists():  # answers that came and wait for their turn in the log
        logged = {m.key for m in loglib.read_all(run_dir / "messages.jsonl", on_torn="ignore") if isinstance(m, Call)}
        journaled = len(set(Journal(journal.path).answers) - logged)
    return RunFailed(run_dir, e, path, interrupted=isinstance(e, KeyboardInterrupt), journaled=journaled)


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
    logged, code = last_code(messages), registry.fingerprint(p)
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
    room = Classroom(cfg, memory, run_id, previous=messages, workdir=str(run_dir), replaying=hint)
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
           render(report) + faults_markdown(messages) + "\n## Cost\n\n" + usage_markdown(messages) +
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
