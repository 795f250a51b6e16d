"""Run a protocol from a config into a run directory, or resume one (replay: ``replay.py``).

A run directory holds ``config.toml`` (the config as resolved: repeat the run from it),
``messages.jsonl`` (every message, append-only), ``metrics.json``, ``report.md`` and a PNG
per figure.
"""

from __future__ import annotations

import contextlib
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
from schoolroom.agents.hosting.worker import start_ray
from schoolroom.classroom import loading as registry
from schoolroom.classroom import preflight
from schoolroom.classroom.journal import Journal
from schoolroom.classroom.room import Classroom
from schoolroom.errors import RunFailed, Terminated, one_line, plain
from schoolroom.messages import Call, Note, sequential_ids
from schoolroom.reporting.files import part_seconds, write_report
from schoolroom.reporting.report import Report
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
        preflight.check(cfg, source, resume=True, settings=settings)
        say(f"resuming {run_dir}: reading its log")
        previous = loglib.read_all(run_dir / "messages.jsonl", on_torn="ignore")  # the Writer cuts it, and warns
        run_id = next((m.run_id for m in previous if m.run_id), run_dir.name)
        orphans = loglib.orphaned(previous)
        calls = sum(isinstance(m, Call) for m in previous)
        journal = Journal(run_dir / JOURNAL, run_id)
        say(f"found {len(previous)} messages and {calls} answered calls in the log"
            + (f", and {len(journal.answers)} answer{'s' * (len(journal.answers) > 1)} not yet logged in the "
               "journal" if journal.answers else "")
            + ": they are not asked again"
            + (f"; {len(orphans)} messages of a call the crash cut short are set aside" if orphans else ""))
    else:
        preflight.check(cfg, source, settings=settings)
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
