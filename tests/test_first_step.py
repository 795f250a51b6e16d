"""The first_step protocol end to end: inline and on local Ray, resume after a crash, replay, configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from conftest import content, crashed_copy, replays_alike, tiny_config, tiny_run_config

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.analysis import Run
from schoolroom.classroom import replay, runner
from schoolroom.classroom.callpath import NotInLog
from schoolroom.log import transcript
from schoolroom.messages import Attempt, Call, Note, Usage, Verdict

pytestmark = pytest.mark.slow

def run_tiny(tmp_path, **kw):
    return runner.run(configlib.decode(tiny_config(**kw)), out=str(tmp_path))


@pytest.fixture(scope="module")
def inline_run(tiny_run):
    return tiny_run


def test_inline_run_writes_a_complete_run_directory(inline_run):
    for f in ("config.toml", "messages.jsonl", "metrics.json", "report.md", "accuracy_vs_k.png"):
        assert (inline_run / f).stat().st_size > 0, f
    messages = log.read_all(inline_run / "messages.jsonl")
    attempts = [m for m in messages if isinstance(m, Attempt)]
    verdicts = [m for m in messages if isinstance(m, Verdict)]
    assert len(attempts) == len(verdicts) == 6  # 3 problems x k in (0, 1)
    assert {m.sender for m in attempts} == {"student"} and all(m.run_id for m in messages)
    metrics = json.loads((inline_run / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["comparable_n"] == 2 and metrics["set_aside"] == 1
    report = (inline_run / "report.md").read_text()
    assert "difference vs k=0" in report and "By number of gold steps" in report and "Wall time" in report
    # the resolved config repeats the run
    again, _ = configlib.load(inline_run / "config.toml")
    first = configlib.decode(tiny_run_config())
    assert msgspec.structs.replace(again, protocol={}) == msgspec.structs.replace(first, protocol={})
    assert runner.protocol_of(again, "again")[1] == runner.protocol_of(first, "first")[1]


def test_same_messages_inline_and_on_local_ray(inline_run, tmp_path, ray_local):
    ray_dir = run_tiny(tmp_path, address="local")
    a = log.read_all(inline_run / "messages.jsonl")
    b = log.read_all(ray_dir / "messages.jsonl")
    assert content(a) == content(b)


def test_crash_then_resume_asks_nothing_twice(inline_run, tmp_path):
    whole = log.read_all(inline_run / "messages.jsonl")
    calls = [i for i, m in enumerate(whole) if isinstance(m, Call) and m.agent == "student"]
    # crash in the middle of the verifier's batch after the second student call: the log keeps that call,
    # one message of the next batch (whose call record never made it) and half a line
    kept = calls[1] + 3  # lines of the log kept whole (line 0 is the header)
    crashed = crashed_copy(inline_run, tmp_path / "crashed", keep=kept, torn=30)
    before = log.read_all(crashed / "messages.jsonl", on_torn="ignore")
    orphan = before[-1]
    assert isinstance(orphan, Verdict) and orphan.sender == "verifier"
    # the damaged log replays everything before the damage and says where it stopped
    with pytest.warns(log.TornLineWarning):
        damaged = Run(crashed)
    assert len(damaged.all_messages) == len(before) and f"messages.jsonl:{kept + 1}:" in damaged.stopped
    with pytest.raises(NotInLog, match=rf"damaged at .*messages.jsonl:{kept + 1}: torn.*schoolroom resume"):
        replay.replay(crashed, tmp_path / "replay")
    with pytest.warns(log.TornLineWarning):
        runner.run(configlib.decode(tiny_config()), resume=crashed)
    after = log.read_all(crashed / "messages.jsonl")
    assert after[: len(before)] == before, "nothing logged before the crash is lost or changed"
    student_usage = [m for m in after[len(before):] if isinstance(m, Usage) and m.agent == "student"]
    total_usage = [m for m in whole if isinstance(m, Usage) and m.agent == "student"]
    assert len(student_usage) == len(total_usage) - 2, "the two logged student calls were not asked again"
    assert json.loads((crashed / "metrics.json").read_text())["teachers"] == \
        json.loads((inline_run / "metrics.json").read_text())["teachers"]
    (note,) = [m for m in after if isinstance(m, Note) and m.kind == "orphaned"]
    assert note.data["ids"] == [orphan.id], "the cut-off batch is marked, and the call was asked again"
    pd_equal = Run(crashed).accuracy().equals(Run(inline_run).accuracy())
    assert pd_equal, "the resumed run reports what the run in one go did"
    replays_alike(crashed)  # the resumed run's log replays to its own report


def test_reuse_answers_a_teacher_from_an_earlier_run(inline_run, tmp_path):
    from schoolroom.messages import Guidance

    first = log.read_all(inline_run / "messages.jsonl")
    again = runner.run(configlib.decode(tiny_config()), out=str(tmp_path),
                       reuse={"reference": str(inline_run / "messages.jsonl")})
    second = log.read_all(again / "messages.jsonl")
    assert [g.id for g in second if isinstance(g, Guidance)] == [g.id for g in first if isinstance(g, Guidance)]
    assert not [m for m in second if isinstance(m, Usage) and m.agent == "reference"], "the teacher was not asked"
    assert [m for m in second if isinstance(m, Usage) and m.agent == "student"], "the student was"
    assert 'reference = "' in (again / "config.toml").read_text(), "the reuse is part of the resolved config"


def test_replay_rebuilds_the_report_with_no_agent_and_tables_match_the_log(inline_run, tmp_path):
    done = replays_alike(inline_run, tmp_path / "replay")
    assert (done.out / "report.md").exists() and not (done.out / "messages.jsonl").exists()
    messages = log.read_all(inline_run / "messages.jsonl")
    run = Run(inline_run)
    files = run.to_parquet(tmp_path / "parquet")
    import pandas as pd

    counts = {kind: len(pd.read_parquet(path)) for kind, path in files.items()}
    assert counts["attempts"] == sum(isinstance(m, Attempt) for m in messages) == 6
    assert sum(counts.values()) == len(messages)
    acc = run.accuracy()
    assert list(acc["condition"]) == ["first_step/reference/k=0", "first_step/reference/k=1"]
    metrics = json.loads((inline_run / "metrics.json").read_text())["teachers"]["reference"]
    assert list(acc["correct"]) == [metrics[k]["comparable"]["correct"] for k in ("0", "1")]
    wrong = sum(not v.correct for v in messages if isinstance(v, Verdict))
    assert run.pits()["wrong"].sum() == len(run.first_pits()) == wrong
    assert set(run.first_pits()["source"]) == {"gold"}, "no explorer here: pits come from the gold steps"
    cost = run.cost().set_index("agent")
    assert cost.loc["student", "generations"] == 6 and cost.loc["student", "completion_tokens"] > 0
    pid = next(m.problem_id for m in messages if isinstance(m, Attempt))
    t = transcript(messages, pid)
    assert t.count("Attempt") == 2 and "Verdict" in t and "gold steps" in t
    out = subprocess.run([sys.executable, "-m", "schoolroom.cli", "replay", str(inline_run), "--transcript", pid],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Guidance" in out.stdout


def test_a_log_the_protocol_no_longer_matches_says_so(inline_run, tmp_path):
    """The run's log replayed by an edited copy of its protocol: equal while it asks the same calls, a clear
    error naming the first call it asks that the log lacks once it does not."""
    import shutil

    from schoolroom.protocols import first_step

    run_dir = tmp_path / "run"
    shutil.copytree(inline_run, run_dir, ignore=shutil.ignore_patterns("replay", "tensorboard"))
    source = Path(first_step.__file__).read_text()
    config = (run_dir / "config.toml").read_text()

    def edited(name: str, text: str) -> None:  # the protocol from a file of its own, the run's config pointing at it
        (tmp_path / f"{name}.py").write_text(text.replace('@protocol("first_step"', f'@protocol("{name}"'))
        (run_dir / "config.toml").write_text(config.replace('name = "first_step"',
                                                            f'name = "{name}"\nfile = "{tmp_path / name}.py"'))
    edited("same", source)
    assert replay.replay(run_dir, tmp_path / "same").differences == []
    line = "room.agent(s, Student).solve.submit(problems, guidance)"
    assert line in source
    edited("changed", source.replace(line, line.replace("(problems,", "(problems[::-1],")))
    with pytest.raises(NotInLog, match=r"student.solve \(round 0\) .* is not in the log, after \d+ calls .* "
                                       r"protocol 'changed' has changed since this run"):
        replay.replay(run_dir, tmp_path / "changed")


def test_two_runs_side_by_side_with_paired_differences(inline_run, tmp_path, capsys):
    from schoolroom import cli

    assert cli.main(["replay", str(inline_run), str(inline_run)]) == 0
    table = capsys.readouterr().out
    row = next(ln for ln in table.splitlines() if "first_step/reference/k=1" in ln)
    assert row.count("(0/2)") + row.count("(1/2)") + row.count("(2/2)") == 2 and "| 2 | +0.0 [+0.0, +0.0] |" in row


def test_tensorboard_curves_are_the_scalars_of_the_log(inline_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(inline_run / "tensorboard"))
    events.Reload()
    written = sorted((tag, e.step, round(e.value, 3)) for tag in events.Tags()["scalars"] for e in events.Scalars(tag))
    logged = sorted((tag, step, round(v, 3)) for tag, step, v in Run(inline_run).scalars().itertuples(index=False))
    assert written == logged
    assert {"accuracy/first_step/reference/k=1", "tokens/student", "seconds/student"} <= {t for t, _, _ in written}


def test_config_errors_name_the_file_and_key(tmp_path):
    raw = tiny_config()
    path = tmp_path / "bad.toml"
    raw["agents"]["student"]["max_tokens"] = "many"
    path.write_text(configlib.dump(raw))
    with pytest.raises(configlib.ConfigError, match=r"bad.toml: Expected `int`, got `str` - at `\$.agents.student.max_tokens`"):
        configlib.load(path)
    raw["agents"]["student"]["max_tokens"] = 5
    raw["agents"]["student"]["max_tokns"] = 5
    path.write_text(configlib.dump(raw))
    with pytest.raises(configlib.ConfigError, match=r"unknown field `max_tokns` - at `\$.agents.student`"):
        configlib.load(path)
    del raw["agents"]["student"]["max_tokns"]
    raw["protocol"]["kss"] = [1]
    path.write_text(configlib.dump(raw))
    cfg, _ = configlib.load(path)
    with pytest.raises(configlib.ConfigError, match=r"bad.toml: .*unknown field `kss` - at `\$.protocol`"):
        runner.protocol_of(cfg, str(path))
    out = subprocess.run([sys.executable, "-m", "schoolroom.cli", "run", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "kss" in out.stderr and "Traceback" not in out.stderr


def test_set_overrides_go_through_the_same_decoding(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(configlib.dump(tiny_config()))
    cfg, _ = configlib.load(path, ["agents.student.max_tokens=7", "protocol.ks=[0, 2]", "run.name=renamed"])
    assert cfg.agents["student"].max_tokens == 7 and cfg.protocol["ks"] == [0, 2] and cfg.run.name == "renamed"
    with pytest.raises(configlib.ConfigError, match=r"\$.agents.student.max_tokens"):
        configlib.load(path, ["agents.student.max_tokens=lots"])


def test_call_keys_follow_what_changes_answers_not_where_they_run(tmp_path):
    """A resumed or reused call is answered from the log only when the agent would answer the same: its model
    and sampling settings are part of the key; its cores, batch size, retries and endpoint (the same model
    served elsewhere) are not."""
    from schoolroom.classroom.room import Classroom
    from schoolroom.log import Writer

    def settings(**agent):
        cfg = configlib.decode({"runtime": {"address": "inline"},
                                "agents": {"teacher": {"role": "teacher", "engine": "reference", **agent}}})
        with Writer(tmp_path / "messages.jsonl") as w:
            room = Classroom(cfg, w, "run", workdir=str(tmp_path))
            try:
                return room.agent("teacher").settings
            finally:
                room.close()

    base = settings()
    assert settings(threads=1, batch_size=2, resources={"num_cpus": 0}, concurrency=1, timeout_s=5.0,
                    base_url="http://127.0.0.1:1/v1") == base
    for changed in ({"model": "other"}, {"dtype": "bfloat16"},
                    {"temperature": 0.7}, {"max_tokens": 8}, {"system_prompt": "Be brief."}):
        assert settings(**changed) != base, changed


def test_a_cohort_of_students_shares_each_teachers_guidance(tmp_path):
    raw = tiny_config(address="inline")
    raw["agents"]["gold"] = {"role": "student", "engine": "reference", "resources": {"num_cpus": 0}}
    raw["protocol"] |= {"students": ["student", "gold"], "ks": [0, 1]}
    run_dir = runner.run(configlib.decode(raw), out=str(tmp_path))
    messages = log.read_all(run_dir / "messages.jsonl")
    calls = [(m.agent, m.method) for m in messages if isinstance(m, Call)]
    # k = 1 asked once for both students (in 2 pieces: chunk_size 2, 3 problems)
    assert calls.count(("reference", "guide")) == 2
    assert calls.count(("gold", "solve")) == calls.count(("student", "solve")) == 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    gold = metrics["students"]["gold"]["teachers"]["reference"]
    assert all(gold[k]["accuracy"] == 1.0 for k in ("0", "1")), "the gold student copies the solution"
    cohort = metrics["cohort"]["teachers"]["reference"]
    for k in ("0", "1"):
        own = [metrics["students"][s]["teachers"]["reference"][k] for s in ("student", "gold")]
        assert cohort[k]["n"] == sum(a["n"] for a in own) and cohort[k]["correct"] == sum(a["correct"] for a in own)
    report = (run_dir / "report.md").read_text()
    assert "| gold | reference | 1 |" in report and "| cohort of 2 (pooled) | reference | 0 |" in report
