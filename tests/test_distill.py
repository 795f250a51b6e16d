"""The distill protocol: the student samples, the teacher grades its tokens, one opd update; beside SFT on the
teacher's own samples and GRPO, from the same start. On Ray actors, and resumed after a crash without retraining."""

from __future__ import annotations

import json

import pytest
from conftest import crashed_copy, replays_alike

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.classroom import runner
from schoolroom.messages import Call, EvalReport, TokenScores, TrainRequest


def tiny(address: str, **protocol) -> dict:
    synthetic = {"source": "synthetic", "n": 4, "steps": [1]}
    small = {"threads": 2, "resources": {"num_cpus": 0.25}}
    return {
        "run": {"name": "tiny_distill"},
        "runtime": {"address": address},
        "data": {"train": synthetic | {"seed": 1}, "eval": synthetic | {"seed": 2, "n": 2}},
        "agents": {
            "student": {"role": "student", "max_tokens": 20, **small},
            "teacher": {"role": "teacher", "max_tokens": 40, **small},
            "trainer": {"role": "trainer", **small},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        "protocol": {"name": "distill", "iterations": 1, "batch": 2, "n": 2, "eval_every": 1,
                     # a teacher that writes "#### answer" (its samples are what sft_teacher learns)
                     "teacher_sft": {"max_steps": 4, "batch_size": 4, "learning_rate": 5e-3}, "opd": {"max_steps": 1, "batch_size": 4},
                     "sft_teacher": {"max_steps": 1, "batch_size": 4}, "grpo": {"max_steps": 1, "batch_size": 4}}
                    | protocol,
    }


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory):
    from conftest import ensure_ray

    ensure_ray()
    return runner.run(configlib.decode(tiny("local")), out=str(tmp_path_factory.mktemp("distill")))


@pytest.mark.slow
def test_one_distill_iteration_of_each_arm_through_ray(distill_run):
    messages = log.read_all(distill_run / "messages.jsonl")
    requests = [m for m in messages if isinstance(m, TrainRequest)]
    assert [r.kind for r in requests] == ["sft", "opd", "sft", "grpo"]  # the teacher's SFT, then one per arm
    opd = requests[1]
    scores = [m for m in messages if isinstance(m, TokenScores)]
    assert len(scores) == 4 and set(opd.data) >= {s.id for s in scores}
    assert all(s.adapter and s.adapter.startswith("teacher_sft") for s in scores)  # the teacher with its adapter
    assert {m.name for m in messages if isinstance(m, EvalReport)} == {
        "start", "teacher", "opd/it1", "sft_teacher/it1", "grpo/it1"}
    report = (distill_run / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Found**") and "Per iteration" in report
    metrics = json.loads((distill_run / "metrics.json").read_text())
    (curve,) = [c for c in metrics["curves"] if c["arm"] == "opd"]
    assert curve["teacher_tokens"] == sum(len(s.logprobs) for s in scores) and curve["advantage_mean"] < 0
    assert (distill_run / "accuracy_by_student_tokens.png").exists()
    replays_alike(distill_run)


@pytest.mark.slow
def test_a_resumed_distill_run_trains_nothing_twice(distill_run, tmp_path):
    whole = log.read_all(distill_run / "messages.jsonl")
    trained = [i for i, m in enumerate(whole) if isinstance(m, Call) and m.method == "train"]
    cut = trained[1]  # the teacher's SFT and the opd update are logged; the crash comes after
    crashed = crashed_copy(distill_run, tmp_path / "crashed", keep=cut + 2, torn=40, adapters=True)
    runner.run(configlib.decode(tiny("inline")), resume=crashed)
    after = log.read_all(crashed / "messages.jsonl")
    calls = [m for m in after if isinstance(m, Call) and m.method == "train"]
    assert len(calls) == len(trained) and len({c.key for c in calls}) == len(calls), "each adapter trained once"
    assert [m.id for m in after if isinstance(m, TrainRequest)] == [m.id for m in whole if isinstance(m, TrainRequest)]
    assert sorted(m.name for m in after if isinstance(m, EvalReport)) == \
        sorted(m.name for m in whole if isinstance(m, EvalReport))
