"""Fuzz the log reader: damage a real log (truncate, garble, duplicate, reorder, drop lines) and check that
reading raises nothing but LogError, keeps every valid line before the first damaged one, and names that line."""

from __future__ import annotations

import os
import tempfile
import warnings

from hypothesis import given, settings
from hypothesis import strategies as st

from schoolroom import log
from schoolroom import messages as m

fuzz = settings(max_examples=120, deadline=None, derandomize=True, database=None)

WRITTEN = [
    m.Problem(id="p", run_id="r", problem_id="p1", dataset="synthetic", question="Tom hat 2 Äpfel — und 1 €?",
              gold_steps=("2 + 1 = 3",), answer="3", meta={"steps": 2, "ok": True}, time=1.25),
    m.Attempt(id="a", run_id="r", parents=("p",), problem_id="p1", text="2 + 1 = 3\n#### 3", steps=("2 + 1 = 3",),
              answer="3", time=2.5),
    m.Note(id="n", kind="unparsed", text='a "quoted" \\ reply\t', data={"raw": [1, 2.5, None]}, time=3.0),
    m.Call(id="c", agent="student", method="solve", key="k", outputs=("a",), value={"x": 1}, seconds=0.5, time=4.0),
    m.Usage(id="u", agent="teacher", engine="openai", prompt_tokens=10, completion_tokens=5, latency_s=0.1,
            cost=1e-5, time=5.0),
]
HEADER, DAMAGED = "header", "damaged"  # what a line must read as, besides a message


def _written_lines() -> list[bytes]:
    with tempfile.TemporaryDirectory() as d, log.Writer(os.path.join(d, "messages.jsonl"), run_id="r") as w:
        w.write(WRITTEN[:2])
        for x in WRITTEN[2:]:
            w.write(x)
        with open(w.path, "rb") as f:
            return f.read().splitlines(keepends=True)


LINES = _written_lines()
WANT = [HEADER, *WRITTEN]  # what each written line reads as
NEVER_IN_JSON = [0xC0, 0xC1, *range(0xF5, 0x100),  # never in UTF-8
                 *(b for b in range(0x20) if b not in b"\t\n\r")]  # a raw control character: no JSON text holds one


def read_damaged(data: bytes, on_torn: str):
    """Read ``data`` as a log file: (its path, the messages read, the LogError that stopped it, the warnings)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "messages.jsonl")
        with open(path, "wb") as f:
            f.write(data)
        got, err = [], None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for x in log.read(path, on_torn=on_torn):  # (a): anything but a LogError fails the test
                    got.append(x)
            except log.LogError as e:
                err = e
            if on_torn == "raise":  # the same stop (a garbled line missing its time is stamped anew each read)
                msgs, stop = log.read_until_damage(path)
                assert len(msgs) == len(got) and stop == (None if err is None else str(err))
        assert all(w.category is log.TornLineWarning for w in caught), [str(w.message) for w in caught]
        if err is not None:  # (c): the file and the line
            assert err.path == path and f"{path}:{err.line}: " in str(err)
        return path, got, err, [str(w.message) for w in caught]


def expect(lines: list[tuple[bytes, object]], cut: int | None = None):
    """What the reader must give for ``lines`` (bytes, what it reads as) cut at byte ``cut``: the messages before
    the first damaged line, that line's number (None: no damage), and whether it is torn."""
    out, pos = [], 0
    for n, (line, want) in enumerate(lines, start=1):
        if cut is not None and cut < pos + len(line):
            return out, (n if cut > pos else None), cut > pos
        pos += len(line)
        if want is DAMAGED:
            return out, n, False
        if want is not HEADER:
            out.append(want)
    return out, None, False


def check(lines: list[tuple[bytes, object]], cut: int | None = None) -> None:
    """Read the damaged log in every ``on_torn`` mode and compare it with :func:`expect`."""
    data = b"".join(line for line, _ in lines)[:cut]
    want, bad, torn = expect(lines, cut)
    for on_torn in ("raise", "warn", "ignore"):
        path, got, err, warned = read_damaged(data, on_torn)
        assert got == want  # (b): every valid line before the damage, in order, as written
        if bad is None or (torn and on_torn != "raise"):
            assert err is None
        else:
            assert err is not None and err.line == bad and isinstance(err, log.TornLineError) == torn
        if torn and on_torn == "warn":
            assert len(warned) == 1 and warned[0].startswith(f"{path}:{bad}: torn last line")
        else:
            assert warned == []


@fuzz
@given(st.integers(0, sum(map(len, LINES))))
def test_a_log_cut_at_any_byte_reads_to_the_cut_and_resumes(cut):
    check(list(zip(LINES, WANT)), cut)
    want, _, torn = expect(list(zip(LINES, WANT)), cut)
    with tempfile.TemporaryDirectory() as d:  # a resumed run cuts the torn line and goes on from there
        path = os.path.join(d, "messages.jsonl")
        with open(path, "wb") as f:
            f.write(b"".join(LINES)[:cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with log.Writer(path, run_id="r") as w:
                w.write(m.Note(id="resumed", kind="resume", text="resumed", time=9.0))
        assert [w.category for w in caught] == [log.TornLineWarning] * torn
        assert log.read_all(path, on_torn="raise") == want + [m.Note(id="resumed", kind="resume", text="resumed",
                                                                      time=9.0)]


@fuzz
@given(st.lists(st.integers(0, len(LINES) - 1), max_size=15))
def test_lines_duplicated_reordered_or_dropped_read_as_they_stand(order):
    check([(LINES[i], WANT[i]) for i in order])


@fuzz
@given(st.lists(st.integers(0, len(LINES) - 1), min_size=1, max_size=10), st.data())
def test_a_line_garbled_past_repair_stops_the_read_there(order, data):
    """Garbled so that it certainly is not a record (a byte no JSON holds, cut short, split by a newline), among
    shuffled valid lines, and the file maybe cut too."""
    lines = [(LINES[i], WANT[i]) for i in order]
    k = data.draw(st.integers(0, len(lines) - 1), label="garbled line")
    body = lines[k][0][:-1]
    how = data.draw(st.sampled_from(["byte", "cut short", "split"]), label="how")
    if how == "byte":
        i = data.draw(st.integers(0, len(body)), label="at")
        garbled = [body[:i] + bytes([data.draw(st.sampled_from(NEVER_IN_JSON), label="byte")]) + body[i:]]
    else:  # a JSON object cut anywhere is never closed
        i = data.draw(st.integers(1, len(body) - 1), label="at")
        garbled = [body[:i]] + [body[i:]] * (how == "split")
    lines[k:k + 1] = [(g + b"\n", DAMAGED) for g in garbled]
    size = sum(len(line) for line, _ in lines)
    check(lines, data.draw(st.none() | st.integers(0, size), label="cut"))


edits = st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(0, 10**4),
                  st.integers(0, 255) | st.sampled_from(list(b'\n\r "\\{}[]:,0\x00\xff\xc3')))


@fuzz
@given(st.integers(0, len(LINES) - 1), st.lists(edits, min_size=1, max_size=4))
def test_any_garbled_line_raises_only_log_error_and_keeps_what_came_before(k, edit_list):
    """Any byte edits: the line may still decode, so only the bounds are certain."""
    body = bytearray(LINES[k][:-1])
    for op, at, byte in edit_list:
        i = at % (len(body) + (op == "insert")) if body or op == "insert" else None
        if i is None:
            continue
        if op == "flip":
            body[i] ^= 1 << byte % 8
        elif op == "set":
            body[i] = byte
        elif op == "insert":
            body.insert(i, byte)
        else:
            del body[i]
    before = [w for w in WANT[:k] if w is not HEADER]
    after = [w for w in WANT[k + 1:] if w is not HEADER]
    data = b"".join(LINES[:k]) + bytes(body) + b"\n" + b"".join(LINES[k + 1:])
    for on_torn in ("raise", "warn", "ignore"):
        _, got, err, warned = read_damaged(data, on_torn)
        assert warned == []  # the file still ends with a newline
        assert got[:len(before)] == before
        if err is None:
            assert got[len(got) - len(after):] == after
        else:
            assert k + 1 <= err.line <= k + 1 + body.count(b"\n")
