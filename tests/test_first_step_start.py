"""first_step as the paper runs it: the student fine-tuned first (one logged training call, not redone on resume),
model teachers of their own strength, and the teacher stepping in at step j after the student's own steps."""

from __future__ import annotations

import json

import pytest
from conftest import crashed_copy, tiny_config

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.classroom import runner
from schoolroom.messages import Attempt, Call, Guidance, Problem, TrainRequest, TrainResult
from schoolroom.protocols.first_step import own_steps

pytestmark = pytest.mark.slow

ONE_STEP = {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3}


def sft_config() -> dict:
    """Two 3-step problems; the student starts from one SFT step; a tutor (the same model with an SFT of its own,
    writing by solving) beside the reference; the reference steps in at step 2."""
    raw = tiny_config(n=2, max_tokens=24, start="sft", sft=ONE_STEP, teachers=["reference", "tutor"],
                      teacher_settings={"tutor": {"adapter": "sft", "writes": "solution"}}, teacher_sft=ONE_STEP,
                      intervene_at=[2])
    raw["data"]["eval"]["steps"] = [3]
    raw["data"]["train"] = {"source": "synthetic", "n": 2, "steps": [2], "seed": 1}
    raw["agents"]["tutor"] = {"role": "teacher", "engine": "hf", "max_tokens": 24, "resources": {"num_cpus": 0}}
    raw["agents"]["trainer"] = {"role": "trainer", "resources": {"num_cpus": 0}}
    return raw


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    return runner.run(configlib.decode(sft_config()), out=str(tmp_path_factory.mktemp("sft")))


def test_the_student_starts_fine_tuned_and_a_tutor_of_its_own_sft_guides(sft_run):
    messages = log.read_all(sft_run / "messages.jsonl")
    requests = [m for m in messages if isinstance(m, TrainRequest)]
    assert sorted(r.name for r in requests) == ["sft", "teacher_sft"], "one SFT for the student, one for the tutor"
    results = {m.adapter.split("-r")[0]: m for m in messages if isinstance(m, TrainResult)}
    loads = {c.agent: c for c in messages if isinstance(c, Call) and c.method == "load"}
    assert set(loads) == {"student", "tutor"}
    attempts = [m for m in messages if isinstance(m, Attempt)]
    assert {a.adapter for a in attempts} == {results["sft"].adapter}, "every attempt is the fine-tuned student's"
    tutor = [g for g in messages if isinstance(g, Guidance) and g.teacher == "tutor"]
    assert len(tutor) == 2 and all(g.k == 1 for g in tutor)
    metrics = json.loads((sft_run / "metrics.json").read_text())
    assert set(metrics["teachers"]) == {"reference", "tutor"} and "fine-tuned" in metrics["start"]
    cascade = metrics["unguided_first_step"]
    assert cascade["on_track"] + cascade["off_track"] == 2
    assert cascade["accuracy_on_track"]["correct"] + cascade["accuracy_off_track"]["correct"] == \
        metrics["teachers"]["reference"]["0"]["all"]["correct"]
    report = (sft_run / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Found**"), report[:400]
    assert "its own SFT" in report and "writes by solution" in report


def test_intervention_at_step_j_hands_the_student_its_own_first_steps(sft_run):
    messages = log.read_all(sft_run / "messages.jsonl")
    problems = {p.problem_id: p for p in messages if isinstance(p, Problem)}
    unguided = {a.problem_id: a for a in messages if isinstance(a, Attempt) and not a.prefix}
    stepped = [g for g in messages if isinstance(g, Guidance) and g.kind == "next_step"]
    assert stepped, "the student wrote a first step on some problem, so the teacher stepped in at step 2"
    for g in stepped:
        own = own_steps(unguided[g.problem_id])
        assert g.k == 2 and g.steps[:1] == tuple(own[:1]), "the student's own step 1, as it wrote it"
        assert g.steps[1] == problems[g.problem_id].gold_steps[1], "then the reference's step 2"
        (after,) = [a for a in messages if isinstance(a, Attempt) and g.id in a.parents]
        assert after.prefix == "\n".join(g.steps) + "\n"
    metrics = json.loads((sft_run / "metrics.json").read_text())["intervention"]["2"]
    assert metrics["teacher"] == "reference" and metrics["reached"] == len(stepped)


def test_a_resumed_run_trains_nothing_twice(sft_run, tmp_path):
    whole = log.read_all(sft_run / "messages.jsonl")
    trained = [i for i, m in enumerate(whole) if isinstance(m, Call) and m.method == "train"]
    # the student's SFT is logged (line 0 is the header); the crash comes in the next message
    crashed = crashed_copy(sft_run, tmp_path / "crashed", keep=trained[0] + 2, torn=40, adapters=True)
    with pytest.warns(log.TornLineWarning):
        runner.run(configlib.decode(sft_config()), resume=crashed)
    after = log.read_all(crashed / "messages.jsonl")
    train_calls = [m for m in after if isinstance(m, Call) and m.method == "train"]
    assert len(train_calls) == 2 and len({c.key for c in train_calls}) == 2, "each SFT once"
    assert json.loads((crashed / "metrics.json").read_text())["teachers"] == \
        json.loads((sft_run / "metrics.json").read_text())["teachers"]


def test_sft_without_its_data_set_is_one_line_naming_the_way_out(tmp_path):
    raw = tiny_config(start="sft")
    with pytest.raises(configlib.ConfigError, match=r'start = "sft" trains on .* train, which the config does not define .* '
                                         r'protocol.start = "base"'):
        runner.protocol_of(configlib.decode(raw), "cfg.toml")


def test_a_teacher_sft_without_its_data_set_names_its_own_setting():
    raw = sft_config()
    raw["protocol"]["teacher_sft_data"] = "tutor_train"
    with pytest.raises(configlib.ConfigError, match=r'a teacher of adapter "sft" trains on .* tutor_train, which the '
                                                    r"config does not define .* set protocol.teacher_sft_data"):
        runner.protocol_of(configlib.decode(raw), "cfg.toml")
