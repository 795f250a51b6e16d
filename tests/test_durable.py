"""A finished call is never lost: every answer is journaled the moment it comes, a SIGTERM stops a run as Ctrl-C
does, a resume asks nothing that had come back, and the report counts the compute of every part of a run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import tiny_config

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.classroom import runner
from schoolroom.classroom.journal import Journal
from schoolroom.messages import Call, Note
from schoolroom.reporting import files

CLI = str(Path(sys.executable).with_name("schoolroom"))
WORKERS = Path(__file__).parent / "plugins" / "workers.py"


def slow_fast_config(path: Path, delay: float) -> Path:
    """Two workers on a local Ray: a slow call asked first, a fast one after it (tests/plugins/workers.py)."""
    path.write_text(f"""
[run]
name = "slow_fast"
[runtime]
address = "local"
[agents.slow]
role = "worker"
resources = {{ num_cpus = 0 }}
[agents.fast]
role = "worker"
resources = {{ num_cpus = 0 }}
[protocol]
name = "slow_fast"
file = "{WORKERS}"
delay = {delay}
""")
    return path


def fast_answer_in(path: Path):
    """The fast worker's answer, once it is in the file at ``path`` (a journal or a log); else None."""
    if not path.exists():
        return None
    return next((m.value for m in log.read_all(path, on_torn="ignore") if isinstance(m, Call) and m.agent == "fast"),
                None)


@pytest.mark.ray
def test_sigterm_keeps_an_answer_waiting_behind_a_slow_call_and_resume_does_not_ask_it_again(tmp_path, ray_local):
    config = slow_fast_config(tmp_path / "slow_fast.toml", delay=300)
    proc = subprocess.Popen([CLI, "run", str(config), "--out", str(tmp_path / "runs")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, journaled = time.time() + 240, None
        while journaled is None:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0] if proc.poll() else "timeout"
            time.sleep(0.2)
            runs = list((tmp_path / "runs").glob("*/journal.jsonl"))
            journaled = fast_answer_in(runs[0]) if runs else None
        run_dir = runs[0].parent
        assert fast_answer_in(run_dir / "messages.jsonl") is None, "the fast answer waits for the slow one in the log"
        proc.send_signal(signal.SIGTERM)  # what a scheduler sends on preemption
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert "the run was stopped by SIGTERM" in out and f"schoolroom resume {run_dir}" in out, out
    assert "1 answer not yet logged" in out, out
    assert "SIGTERM received" not in out and "PC: @" not in out and "Traceback" not in out, out

    raw = tomllib.loads((run_dir / "config.toml").read_text())
    raw["protocol"]["delay"] = 0.1  # the slow call had not come back: it is asked again, quickly now
    runner.run(configlib.decode(raw), resume=run_dir)
    assert fast_answer_in(run_dir / "messages.jsonl") == journaled, "answered from the journal, not asked again"
    assert not (run_dir / "journal.jsonl").exists(), "a finished run's journal is spent"
    messages = log.read_all(run_dir / "messages.jsonl")
    assert [m.kind for m in messages if isinstance(m, Note) and m.kind in ("stopped", "resumed")] == \
        ["stopped", "resumed"]
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    first, second = metrics["parts_s"]
    assert first > 0.5 and metrics["wall_s"] == pytest.approx(first + second, abs=0.2)
    assert "of compute in 2 parts" in (run_dir / "report.md").read_text()


def test_each_part_counts_from_its_start_to_its_last_message_and_not_the_gap_between():
    def note(kind, t, **data):
        return Note(kind=kind, text=kind, time=t, data=data)

    messages = [note("protocol", 100.0), note("step", 150.0), note("stopped", 170.0),  # part 1: 100 .. 170
                note("resumed", 1000.0, started=990.0), note("step", 995.0),  # part 2 from 990 (gap not counted)
                note("stopped", 1020.0), note("resumed", 5000.0, started=5000.0)]
    assert files.part_seconds(messages, created=100.0, last_s=7.0) == [70.0, 30.0, 7.0]
    assert files.part_seconds(messages[:3], created=100.0, last_s=9.0) == [9.0]


def test_a_journal_gives_back_each_answer_whole_and_skips_a_torn_one(tmp_path):
    from schoolroom.messages import Attempt, Usage

    path = tmp_path / "journal.jsonl"
    j = Journal(path, "r")
    a = Attempt(problem_id="p", text="#### 3", answer="3")
    usage = Usage(agent="student", engine="hf", model="m", calls=1)
    j.write([a], [usage], Call(agent="student", method="solve", key="k1", outputs=(a.id,), shape="list", time=5.0))
    j.write([], [], Call(agent="verifier", method="count", key="k2", shape="value", value=[1, 2]))
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"type":"call","agent":"x"')  # a crash mid-write
    back = Journal(path).answers
    assert set(back) == {"k1", "k2"}
    assert back["k1"].result == [a] and back["k1"].side == [usage] and back["k1"].time == 5.0
    assert back["k2"].result == [1, 2]


def test_resuming_a_finished_run_starts_no_agent(tiny_run, monkeypatch):
    from schoolroom.classroom import room as classroom

    monkeypatch.setattr(classroom, "spawn", lambda *a, **k: pytest.fail("an agent was started"))
    before = (tiny_run / "messages.jsonl").read_bytes()
    assert runner.run(configlib.decode(tiny_config()), resume=tiny_run) == tiny_run
    assert (tiny_run / "messages.jsonl").read_bytes() == before
    assert not (tiny_run / "journal.jsonl").exists()
