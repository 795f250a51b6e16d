"""Append-only JSONL message log.

One JSON record per line; the first line is a :class:`~schoolroom.messages.Header` with the
schema version. ``Writer.write`` appends a batch, flushes and fsyncs it, so a crash leaves
at most a torn last line (no trailing newline); a batch the disk has no room for is cut off.
``read`` yields typed messages and reports a torn tail; a ``Writer`` reopening the file for
resume truncates it. Nothing written before the torn line is ever lost.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

import msgspec

from schoolroom.messages import (MESSAGES, SCHEMA_VERSION, Attempt, Call, Guidance, Header, Message, Note, Problem,
                                 Unknown, Verdict, encode)

_decoders: dict[tuple, msgspec.json.Decoder] = {}


def _decoder() -> msgspec.json.Decoder:
    types = (Header, Unknown, *MESSAGES.values())
    if types not in _decoders:
        _decoders.clear()
        _decoders[types] = msgspec.json.Decoder(Union[types])  # type: ignore[valid-type]
    return _decoders[types]


def decode(data: bytes | str) -> Message | Header:
    """Decode one JSON record into its typed Struct; a type nobody declared comes back as :class:`Unknown`.
    Raises ``msgspec.ValidationError``/``DecodeError`` for a record that is not valid."""
    if isinstance(data, bytes):  # msgspec skips an unknown field's bytes unchecked and lets UnicodeDecodeError out
        try:
            data = data.decode()
        except UnicodeDecodeError as e:
            raise msgspec.DecodeError(f"not UTF-8: {e}") from None
    try:
        return _decoder().decode(data)
    except msgspec.ValidationError:
        raw = msgspec.json.decode(data)
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or raw["type"] in MESSAGES \
                or raw["type"] in ("header", "unknown"):
            raise
        envelope = {f: raw.pop(f) for f in Message.__struct_fields__ if f in raw}
        return msgspec.convert(envelope | {"record_type": raw.pop("type"), "data": raw}, Unknown)


class LogError(ValueError):
    """An unreadable log line: names the file and the 1-based line number."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{self.path}:{line}: {reason}")


class TornLineError(LogError):
    """The last line has no newline: a crash interrupted the write."""


class TornLineWarning(UserWarning):
    pass


class LogWriteError(OSError):
    """A batch could not be written (disk full, file too large, I/O error); the log ends at the last complete line."""

    def __str__(self) -> str:
        return (f"could not write {self.filename}: {self.strerror} (errno {self.errno}); "
                "every complete line before it is kept")


def _tail_start(f) -> int:
    """Offset just after the last newline of an open binary file (0 if none)."""
    end = f.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


class Writer:
    """Appends messages to ``path``; safe to call from several threads of one process.

    Opening an existing log resumes it: a torn last line is cut off (``self.truncated``
    says how many bytes) and the header's schema version is checked. A batch that cannot be
    written (a full disk) is cut off too and raises :class:`LogWriteError`, as does every later write.
    """

    def __init__(self, path: str | os.PathLike, run_id: str = ""):
        self.path = Path(path)
        self.listeners: list = []  # called with each batch after it is on disk (live scalars)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.truncated = 0
        self._error: LogWriteError | None = None
        if self.path.exists():
            self._repair()
        fresh = not self.path.exists() or self.path.stat().st_size == 0  # (a cut torn header leaves nothing)
        self._f = open(self.path, "ab", buffering=0)  # unbuffered: nothing of a failed batch is left to flush later
        try:
            if fresh:
                self._append([encode(Header(run_id=run_id))])
            else:
                self._check_header()
        except BaseException:
            self._f.close()
            raise

    def _repair(self) -> None:
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            keep = _tail_start(f)
            if keep < size:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
                self.truncated = size - keep
                warnings.warn(
                    f"{self.path}: cut a torn last line of {self.truncated} bytes left by an interrupted write",
                    TornLineWarning, stacklevel=3,
                )

    def _check_header(self) -> None:
        with open(self.path, "rb") as f:
            first = f.readline()
        try:
            rec = decode(first)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise LogError(self.path, 1, f"not a schoolroom log header: {e}") from None
        if not isinstance(rec, Header):
            raise LogError(self.path, 1, "first line is not a header")
        if rec.schema != SCHEMA_VERSION:
            raise LogError(self.path, 1, f"schema version {rec.schema}, this schoolroom writes {SCHEMA_VERSION}")

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = memoryview(b"".join(line + b"\n" for line in lines))
        with self._lock:
            if self._error is not None:  # never write after a gap
                raise self._error
            fd = self._f.fileno()
            size = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            except OSError as e:
                self._error = LogWriteError(e.errno, e.strerror, str(self.path))
                try:  # back to the last complete line; should this fail too, the reader sees a torn line there
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                except OSError:
                    pass
                raise self._error from None

    def write(self, messages: Message | Iterable[Message]) -> None:
        """Append one message or a batch, then flush and fsync."""
        messages = [messages] if isinstance(messages, Message) else list(messages)
        self._append([encode(m) for m in messages])
        for listen in self.listeners:
            listen(messages)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read(path: str | os.PathLike, on_torn: str = "warn") -> Iterator[Message]:
    """Yield the typed messages of a log in order.

    An invalid line raises :class:`LogError` naming the file and line, after every message before
    it was yielded; a message type this process was not told about comes back as
    :class:`~schoolroom.messages.Unknown` (load the protocol's file to read it typed). A torn last line (no trailing newline,
    the mark of a crash mid-write) is reported by ``on_torn``: ``"warn"`` (default),
    ``"raise"`` (:class:`TornLineError`) or ``"ignore"``.
    """
    if on_torn not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_torn must be warn, raise or ignore, not {on_torn!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no message log at {path}")
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                reason = f"torn last line ({len(line)} bytes, no newline): a write was interrupted"
                if on_torn == "raise":
                    raise TornLineError(path, n, reason)
                if on_torn == "warn":
                    warnings.warn(f"{path}:{n}: {reason}; it is skipped", TornLineWarning, stacklevel=2)
                return
            if not line.strip():
                continue
            try:
                rec = decode(line)
            except msgspec.ValidationError as e:
                raise LogError(path, n, f"invalid message: {e}") from None
            except msgspec.DecodeError as e:
                raise LogError(path, n, f"not valid JSON: {e}") from None
            if isinstance(rec, Header):
                if rec.schema != SCHEMA_VERSION:
                    raise LogError(path, n, f"schema version {rec.schema}, this schoolroom reads {SCHEMA_VERSION}")
                continue
            yield rec


def header(path: str | os.PathLike) -> Header | None:
    """A log's first line (its schema, run id and when it was made); None when it is not a whole header."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        rec = decode(first) if first.endswith(b"\n") else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return rec if isinstance(rec, Header) else None


def read_all(path: str | os.PathLike, on_torn: str = "warn") -> list[Message]:
    return list(read(path, on_torn=on_torn))


def read_until_damage(path: str | os.PathLike) -> tuple[list[Message], str | None]:
    """Every message before the first damaged line (torn, or not a valid message), and where it stopped
    (``path:line: reason``), None for a whole log."""
    out: list[Message] = []
    try:
        for m in read(path, on_torn="raise"):
            out.append(m)
    except LogError as e:
        return out, str(e)
    return out, None


class Memory:
    """A Writer that keeps what it is given in memory (replay: whatever the protocol makes that the log lacks)."""

    def __init__(self):
        self.messages: list[Message] = []

    def write(self, messages: Message | Iterable[Message]) -> None:
        self.messages += [messages] if isinstance(messages, Message) else list(messages)

    def close(self) -> None:
        pass

def live(messages: list[Message]) -> list[Message]:
    """The messages that count: without those a crash orphaned (their call was asked again on resume)."""
    dead = {i for m in messages if isinstance(m, Note) and m.kind == "orphaned" for i in m.data.get("ids", [])}
    return [m for m in messages if m.id not in dead] if dead else messages


def orphaned(messages: list) -> list[str]:
    """Ids of agent messages after the log's last call record: the outputs of a call whose record the crash cut
    off. The resumed run asks that call again; replay leaves these out."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, Call)), default=-1)
    return [m.id for m in messages[last + 1:] if m.sender not in ("protocol", "environment", "runtime")]


def transcript(messages: list[Message], problem_id: str) -> str:
    """Every message about one problem, in log order."""
    about = [m for m in messages if getattr(m, "problem_id", None) == problem_id]
    if not about:
        raise KeyError(f"no messages about problem {problem_id!r} in this log")
    out = []
    for m in about:
        head = f"[round {m.round}] {type(m).__name__} {m.sender} -> {m.recipient or '*'} ({m.id})"
        if isinstance(m, Problem):
            body = f"{m.question}\n  gold steps:\n" + "\n".join(f"    {s}" for s in m.gold_steps) + f"\n  answer: {m.answer}"
        elif isinstance(m, Guidance):
            body = f"{m.kind} k={m.k} from {m.teacher}:\n" + "\n".join(f"    {s}" for s in m.steps)
        elif isinstance(m, Attempt):
            body = (f"model {m.model} adapter {m.adapter} sample {m.sample}, answer {m.answer!r}\n"
                    + (f"  (given) {m.prefix.rstrip()}\n" if m.prefix else "") + "    " + m.text.strip().replace("\n", "\n    "))
        elif isinstance(m, Verdict):
            body = f"{'correct' if m.correct else 'wrong'}: predicted {m.predicted!r}, gold {m.gold!r}"
        else:
            body = str({f: getattr(m, f) for f in m.__struct_fields__ if f not in Message.__struct_fields__})
        out.append(head + "\n  " + body)
    return "\n\n".join(out)
