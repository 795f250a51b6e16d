"""What went wrong, said in one line: the errors a person reads, and how an exception chain becomes one line.

Everything that can be checked before agents start is a :class:`NotStarted` (one line per problem); an agent
call that fails is an :class:`AgentCallError` (which agent, which call, which round, the cause); a run that
fails after it started is a :class:`RunFailed`, whose paragraph ends with the command that resumes it. The full
traceback goes to a file (``RUN/error.log``), never to the terminal unless asked (``--debug``).
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours the tracebacks of its actors)."""
    return _ANSI.sub("", text)


def innermost(e: BaseException) -> BaseException:
    """The exception at the bottom of ``e``'s chain: a Ray task error's own cause, else ``__cause__`` or the
    context it was raised in, until there is none."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        from_ray = any(c.__module__.startswith("ray.") for c in type(e).__mro__)
        inner = getattr(e, "cause", None) if from_ray else None
        if not isinstance(inner, BaseException):
            inner = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        if inner is None or isinstance(e, Explained):
            break  # our own errors already say their cause in words
        e = inner
    return e


def one_line(e: BaseException, limit: int = 400) -> str:
    """``Type: message`` of the innermost exception, colour codes and remote tracebacks left out."""
    e = innermost(e)
    if isinstance(e, Explained):
        return str(e)
    lines = [ln.strip() for ln in plain(str(e)).splitlines() if ln.strip()]
    if lines and lines[0].startswith("ray::"):  # a Ray wrapper's header: the error is the last line
        lines = lines[-1:]
    said = []
    for ln in lines[:3]:  # the message's own lines, not a traceback quoted in it
        if ln.startswith(("Traceback", "File ", "^")):
            break
        said.append(ln)
    text = " ".join(said)
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def command() -> str:
    """The schoolroom command as this shell can type it, for the hints printed: ``schoolroom`` when that name on
    PATH is this installation's, else its path (``.venv/bin/schoolroom``; relative to the current folder when
    it lies below it)."""
    import shutil
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "schoolroom"  # the script beside this interpreter (the venv's bin)
    found = shutil.which("schoolroom")
    if not exe.exists() or (found and Path(found).resolve() == exe.resolve()):
        return "schoolroom"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


class Explained(Exception):
    """An error whose message already says what went wrong and what to do: printed as it is."""


class NotStarted(Explained):
    """Checks made before anything starts found problems: one line each; no run directory was made."""

    def __init__(self, problems: list[str], source: str = ""):
        self.problems, self.source = problems, source
        head = f"{source}: " if source else ""
        super().__init__(f"{head}the run cannot start ({len(problems)} problem{'s' * (len(problems) > 1)}):\n"
                         + "\n".join(f"  - {p}" for p in problems))


class AgentCallError(Explained):
    """An agent failed a call: which agent, which call and condition, which round, the cause in one line."""

    def __init__(self, agent: str, method: str, round: int, cause: BaseException, stage: str = ""):
        self.agent, self.method, self.round, self.stage = agent, method, round, stage
        self.cause_line = one_line(cause)
        keys = getattr(innermost(cause), "config_keys", ())  # the agent settings that would fix it (an engine's)
        if keys:
            self.cause_line += "; check " + " and ".join(f"agents.{agent}.{k}" for k in keys)
        where = f"{agent}.{method}" + (f" {stage}" if stage else "") + (f" (round {round})" if round else "")
        what = "failed to start" if method == "start" else f"failed in {where}"
        super().__init__(f"agent {agent} {what}: {self.cause_line}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``): the run stops as it does for Ctrl-C."""


class RunFailed(Explained):
    """A run that started and then failed, or was stopped (Ctrl-C, SIGTERM): one paragraph, the traceback in
    ``error_log``. ``journaled``: answers that came back and wait in the journal for their turn in the log."""

    def __init__(self, run_dir, cause: BaseException, error_log, interrupted: bool = False, journaled: int = 0):
        self.run_dir, self.error_log = run_dir, error_log
        if isinstance(cause, Terminated):
            what = "the run was stopped by SIGTERM"
        else:
            what = "the run was interrupted" if interrupted else f"the run failed: {one_line(cause)}"
        kept = (f", and {journaled} answer{'s' * (journaled > 1)} not yet logged in {run_dir}/journal.jsonl"
                if journaled else "")
        then = "Finish" if interrupted or isinstance(cause, KeyboardInterrupt) else "Fix the cause, then finish"
        super().__init__(f"{what}\nEvery message logged before it is kept in {run_dir}/messages.jsonl{kept}; "
                         f"none of them is asked again. Full traceback in {error_log}.\n{then} the run with: "
                         f"{command()} resume {run_dir}")
