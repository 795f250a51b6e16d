"""Messages round-trip through the log; torn and garbled lines are reported and lose nothing."""

from __future__ import annotations

import json
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
    with pytest.warns(log.TornLineWarning, match=r"messages.jsonl:17: torn last line"):
        assert log.read_all(path) == msgs
    with pytest.raises(log.TornLineError, match="messages.jsonl:17"):
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
        del m.MESSAGES["telepathy"]
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
