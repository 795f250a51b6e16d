"""Messages round-trip through the log; torn and garbled lines are reported and lose nothing."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import warnings

import msgspec
import pytest

from schoolroom import log
from schoolroom import messages as m


def one_of_each() -> list[m.Message]:
    p = m.Problem(problem_id="p1", dataset="synthetic", question="Tom has 2 apples.", gold_steps=("a", "b"),
                  answer="3", meta={"gold_steps": 2}, run_id="r", sender="environment")
    a = p.reply(m.Attempt, problem_id="p1", text="2 + 1 = 3\n#### 3", steps=("2 + 1 = 3",), answer="3",
                model="smollm2-135m-instruct", adapter="sft-1", sender="student")
    return [
        p, a,
        a.reply(m.Verdict, problem_id="p1", attempt_id=a.id, correct=True, predicted="3", gold="3"),
        a.reply(m.Mistake, problem_id="p1", attempt_id=a.id, text="x", predicted="4", gold="3"),
        m.Guidance(problem_id="p1", k=1, steps=("a",), text="a", teacher="reference"),
        m.Rationale(problem_id="p1", text="a\nb", steps=("a", "b"), answer="3", source="tailored", mistake_id="x"),
        m.Plan(problem_id="p1", text="1. add", steps=("add",)),
        m.StepRewards(problem_id="p1", attempt_id=a.id, rewards=(1.0, 0.5, None), first_pit=2, rollouts=8,
                      tokens=300),
        a.reply(m.TokenScores, problem_id="p1", attempt_id=a.id, logprobs=(-0.25, -1.5), model="smollm2-135m-instruct",
                adapter="sft-1", context="solution", sender="teacher"),
        m.Explanation(problem_id="p1", text="add them", model="smollm2-135m-instruct", tokens=3, token_ids=(5, 6, 2),
                      logprobs=(-0.5, -1.0, -0.1), sender="teacher"),
        m.Reading(problem_id="p1", explanation_id="e1", solution_logprobs=(-0.2, -0.3), explanation_logprobs=(-1.0,),
                  model="smollm2-135m-instruct", sender="student"),
        m.PreferencePair(problem_id="p1", prompt="q", chosen="good", rejected="bad", level="step"),
        m.TrainRequest(kind="dpo", data=("id1", "id2"), lora={"r": 16, "target_modules": ["q_proj"]},
                       hyper={"lr": 5e-4}, seed=3),
        m.TrainResult(request_id="t", adapter="dpo-1", path="/tmp/a", metrics={"loss": 0.5}),
        m.EvalReport(name="eval", n=10, correct=3, accuracy=0.3, ci_low=0.1, ci_high=0.6, adapter="dpo-1"),
        m.Usage(agent="teacher", engine="openai", model="gpt", prompt_tokens=10, completion_tokens=5, latency_s=0.1),
        m.Note(kind="unparsed", text="teacher reply had no answer", problem_id="p1", data={"raw": "blah"}),
        m.Call(agent="student", method="solve", key="abc", outputs=(a.id,), shape="list", seconds=1.5),
    ]


def test_every_message_type_round_trips(tmp_path):
    msgs = one_of_each()
    assert {type(x) for x in msgs} == set(m.MESSAGE_TYPES), "the test must cover every message type"
    path = tmp_path / "messages.jsonl"
    with log.Writer(path, run_id="r") as w:
        w.write(msgs[:3])
        for x in msgs[3:]:
            w.write(x)
    assert log.read_all(path) == msgs
    header = json.loads(path.read_text().splitlines()[0])
    assert header["type"] == "header" and header["schema"] == m.SCHEMA_VERSION and header["run_id"] == "r"


def test_messages_are_frozen_and_reply_links_parents():
    p = one_of_each()[0]
    with pytest.raises(AttributeError):
        p.answer = "4"  # type: ignore[misc]
    a = p.reply(m.Attempt, problem_id="p1", text="t", sender="student")
    assert a.parents == (p.id,) and a.run_id == p.run_id and a.recipient == p.sender


def test_torn_last_line_is_reported_and_truncated_on_resume(tmp_path):
    msgs = one_of_each()
    path = tmp_path / "messages.jsonl"
    with log.Writer(path) as w:
        w.write(msgs)
    whole = path.read_bytes()
    path.write_bytes(whole + m.encode(msgs[0])[:25])  # a crash in the middle of a write
    torn = len(msgs) + 2  # the header, then a line per message, then the torn one
    with pytest.warns(log.TornLineWarning, match=rf"messages.jsonl:{torn}: torn last line"):
        assert log.read_all(path) == msgs
    with pytest.raises(log.TornLineError, match=f"messages.jsonl:{torn}"):
        list(log.read(path, on_torn="raise"))
    with pytest.warns(log.TornLineWarning, match="cut a torn last line of 25 bytes"):
        w = log.Writer(path)
    extra = m.Note(kind="resume", text="resumed")
    w.write(extra)
    w.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log.read_all(path) == msgs + [extra]


def test_garbled_middle_line_names_file_and_line_and_keeps_earlier_messages(tmp_path):
    msgs = one_of_each()
    path = tmp_path / "messages.jsonl"
    with log.Writer(path) as w:
        w.write(msgs)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = b'{"type": "attempt", "id": \x00garbage\n'
    path.write_bytes(b"".join(lines))
    got = []
    with pytest.raises(log.LogError, match=r"messages.jsonl:6: not valid JSON"):
        for x in log.read(path):
            got.append(x)
    assert got == msgs[:4]


def test_an_undeclared_type_is_kept_raw_and_a_wrong_field_type_is_named(tmp_path):
    path = tmp_path / "messages.jsonl"
    with log.Writer(path) as w:
        w.write(one_of_each()[:2])
    with open(path, "ab") as f:
        f.write(b'{"type": "telepathy", "id": "t1", "round": 2, "time": 5.0, "problem_id": "p1"}\n')
    kept = log.read_all(path)[-1]
    assert isinstance(kept, m.Unknown) and (kept.record_type, kept.id, kept.round) == ("telepathy", "t1", 2)
    assert kept.data == {"problem_id": "p1"}

    @m.message
    class Telepathy(m.Message, frozen=True, kw_only=True, tag="telepathy"):
        problem_id: str

    try:  # declared, the same line reads typed
        assert log.read_all(path)[-1] == Telepathy(id="t1", round=2, problem_id="p1", time=5.0)
    finally:
        m.MESSAGES.unregister("telepathy")
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:3]) +
                     b'{"type": "verdict", "problem_id": "p1", "attempt_id": "a", "correct": "maybe"}\n')
    with pytest.raises(log.LogError, match=r":4: invalid message: Expected `bool`.*correct"):
        log.read_all(path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "messages.jsonl"
    path.write_bytes(msgspec.json.encode({"type": "header", "schema": 99}) + b"\n")
    with pytest.raises(log.LogError, match="schema version 99"):
        log.read_all(path)
    with pytest.raises(log.LogError, match="schema version 99"):
        log.Writer(path)


FILL_DISK = """
import json, resource, signal, sys
from schoolroom import log, messages as m
path, batch, extra = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
note = lambda i: m.Note(id=f"n{i:05d}", kind="fill", text="x" * 100, time=1.0)
w = log.Writer(path)
line = len(m.encode(note(0))) + 1
limit = w.path.stat().st_size + int((3 * batch + extra) * line)  # three batches fit, and `extra` lines more
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
written = 0
try:
    while True:
        w.write([note(written + j) for j in range(batch)])
        written += batch
except log.LogWriteError as e:
    first = e
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again: the writer still refuses, not to leave a gap
try:
    w.write(note(99999))
except log.LogWriteError as e:
    again = e
print(json.dumps({"written": written, "limit": limit, "error": str(first), "errno": first.errno,
                  "filename": first.filename, "again": str(again), "chained": first.__cause__ is not None}))
"""


@pytest.mark.parametrize("batch, extra", [(1, 0), (1, 0.5), (5, 0), (5, 2.5)],
                         ids=["at-a-line", "mid-line", "at-a-batch", "batch-straddles"])
def test_a_full_disk_keeps_every_complete_line_and_names_the_file(tmp_path, batch, extra):
    """A file size limit (RLIMIT_FSIZE) stands in for a full disk: the write fails for real (EFBIG)."""
    path = tmp_path / "messages.jsonl"
    child = subprocess.run([sys.executable, "-c", FILL_DISK, str(path), str(batch), str(extra)],
                           check=False, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    got = json.loads(child.stdout)
    assert got["written"] == 3 * batch  # and no line of the batch that failed (batch-straddles: 2.5 would fit)
    assert got["error"] == got["again"] == (f"could not write {path}: File too large (errno {errno.EFBIG}); "
                                            "every complete line before it is kept")
    assert (got["errno"], got["filename"], got["chained"]) == (errno.EFBIG, str(path), False)
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data) <= got["limit"]
    kept = log.read_all(path, on_torn="raise")
    assert [x.id for x in kept] == [f"n{i:05d}" for i in range(got["written"])]
    with warnings.catch_warnings():  # and the run resumes after it without a cut
        warnings.simplefilter("error")
        with log.Writer(path) as w:
            w.write(m.Note(kind="resume", text="disk freed"))
    assert len(log.read_all(path, on_torn="raise")) == got["written"] + 1
