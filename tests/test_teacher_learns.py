"""The teacher_learns protocol: the teacher explains, the student reads (its log-probability of the gold solution
after each explanation), the teacher is trained by GRPO on the reward, and the student by SFT on the explanations
that helped it; both trained in one run through Ray actors, resumed after a crash without retraining."""

from __future__ import annotations

import json

import pytest
from conftest import crashed_copy, replays_alike

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.analysis.run import Run
from schoolroom.messages import Call, EvalReport, Explanation, Problem, Reading, StepRewards, TrainRequest
from schoolroom.protocols.teacher_learns import TeacherLearnsConfig, best_explanations, rlt


def tiny(address: str, **protocol) -> dict:
    synthetic = {"source": "synthetic", "n": 2, "steps": [1]}
    small = {"threads": 2, "resources": {"num_cpus": 0.25}}
    return {
        "run": {"name": "tiny_teacher_learns"},
        "runtime": {"address": address},
        "data": {"train": synthetic | {"seed": 1}, "eval": synthetic | {"seed": 2}},
        "agents": {
            "student": {"role": "student", "max_tokens": 16, **small},
            "teacher": {"role": "teacher", "max_tokens": 16, **small},
            "trainer": {"role": "trainer", **small},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        "protocol": {"name": "teacher_learns", "iterations": 1, "batch": 2, "n": 2, "student_every": 1,
                     "teacher_grpo": {"max_steps": 1, "batch_size": 4},
                     "student_sft": {"max_steps": 1, "batch_size": 2}, "teach_sft": {"max_steps": 1, "batch_size": 2}}
                    | protocol,
    }


def test_the_rlt_reward_of_one_explanation():
    cfg = TeacherLearnsConfig()
    e = Explanation(problem_id="p", text="x", logprobs=(-1.0, -2.0, -0.5))  # the teacher's, with its stop token
    taught = Reading(problem_id="p", explanation_id=e.id, solution_logprobs=(-1.0, -3.0),
                     explanation_logprobs=(-2.0, -2.0))
    untaught = Reading(problem_id="p", solution_logprobs=(-2.0, -4.0))
    reward, gain, kl = rlt(cfg, taught, untaught, e)
    assert gain == pytest.approx((-2.0 + 0.01 * -3.0) - (-3.0 + 0.01 * -4.0))
    assert kl == pytest.approx(0.5)  # (-1 - -2) and (-2 - -2): the stop token is not read
    assert reward == pytest.approx(gain - (3 * 0.5 + 0.03 * 1.0))
    p = Problem(problem_id="p", dataset="synthetic", question="q", answer="1")
    other = Explanation(problem_id="p", text="y")
    assert best_explanations([p], [e, other], [0.2, 0.5]) == [(p, other)]
    assert best_explanations([p], [e, other], [0.0, -1.0]) == []  # none helped: nothing to learn from


@pytest.fixture(scope="module")
def learns_run(tmp_path_factory):
    from conftest import ensure_ray

    from schoolroom.classroom import runner

    ensure_ray()
    return runner.run(configlib.decode(tiny("local")), out=str(tmp_path_factory.mktemp("teacher_learns")))


@pytest.mark.slow
def test_one_teacher_learns_iteration_trains_both_models_through_ray(learns_run):
    messages = log.read_all(learns_run / "messages.jsonl")
    requests = [m for m in messages if isinstance(m, TrainRequest)]
    assert [(r.kind, r.name) for r in requests] == [("grpo", "teacher"), ("sft", "student"), ("sft", "taught_by_start"),
                                                    ("sft", "taught_by_trained")] or \
        [(r.kind, r.name) for r in requests] == [("grpo", "teacher"), ("sft", "taught_by_start"),
                                                 ("sft", "taught_by_trained")]  # no explanation helped: no student SFT
    explanations = [m for m in messages if isinstance(m, Explanation)]
    assert len(explanations) == 2 + 4 + 2  # the start teacher's on `teach`, the iteration's 2 x 2, the trained's
    assert all(e.token_ids and e.logprobs for e in explanations)
    rewards = [m for m in messages if isinstance(m, StepRewards) and m.source == "rlt"]
    assert set(requests[0].data) == {e.id for e in explanations[2:6]} | {r.id for r in rewards}
    readings = [m for m in messages if isinstance(m, Reading)]
    assert len(readings) == (2 + 4) + 3 * 2 and all(r.solution_logprobs for r in readings)
    assert {m.name for m in messages if isinstance(m, EvalReport)} >= {
        "start", "taught by the start teacher", "taught by the trained teacher"}
    report = (learns_run / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Found**") and "The teacher per iteration" in report
    metrics = json.loads((learns_run / "metrics.json").read_text())
    assert [c["iteration"] for c in metrics["curves"]] == [1]
    table = Run(learns_run).table("explanations")
    assert len(table) == 8 and table["reward"].notna().sum() == 4  # the iteration's, with the reward each earned
    assert (learns_run / "teacher_reward.png").exists()
    replays_alike(learns_run)


@pytest.mark.slow
def test_a_resumed_teacher_learns_run_trains_nothing_twice(learns_run, tmp_path):
    from schoolroom.classroom import runner

    whole = log.read_all(learns_run / "messages.jsonl")
    trained = [i for i, m in enumerate(whole) if isinstance(m, Call) and m.method == "train"]
    crashed = crashed_copy(learns_run, tmp_path / "crashed", keep=trained[0] + 2, torn=40, adapters=True)
    runner.run(configlib.decode(tiny("inline")), resume=crashed)
    after = log.read_all(crashed / "messages.jsonl")
    calls = [m for m in after if isinstance(m, Call) and m.method == "train"]
    assert len(calls) == len(trained) and len({c.key for c in calls}) == len(calls), "each adapter trained once"
    assert [m.id for m in after if isinstance(m, TrainRequest)] == [m.id for m in whole if isinstance(m, TrainRequest)]
    logged = [m.id for m in whole[:trained[0]] if isinstance(m, Explanation)]
    assert len(logged) == 6 and [m.id for m in after if isinstance(m, Explanation)][:6] == logged  # read back, not rewritten


def test_a_teacher_on_another_model_is_refused_in_one_line():
    from schoolroom.classroom import runner

    raw = tiny("inline")
    raw["agents"]["teacher"]["model"] = "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(configlib.ConfigError, match=r"one trainer, on one model: give the student, the teacher and "
                                                    r"the trainer the same model .*teacher Qwen/Qwen2.5-0.5B-Instruct"):
        runner.protocol_of(configlib.decode(raw), "cfg.toml")
    from test_distill import tiny as distill

    raw = distill("inline")
    raw["agents"]["teacher"]["model"] = "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(configlib.ConfigError, match=r'teacher_adapter = "sft" trains the teacher\'s adapter with the '
                                                    r"trainer, on its model smollm2-135m-instruct, but the teacher"):
        runner.protocol_of(configlib.decode(raw), "cfg.toml")


@pytest.mark.slow
def test_the_rcl_reward_is_correct_after_reading_minus_before(tmp_path):
    from schoolroom.classroom import runner

    raw = tiny("inline", reward="rcl", student_every=0)
    raw["data"] = {"train": {"source": "synthetic", "n": 1, "steps": [1], "seed": 1},
                   "eval": {"source": "synthetic", "n": 1, "steps": [1], "seed": 2}}
    raw["protocol"] |= {"batch": 1}
    run = runner.run(configlib.decode(raw), out=str(tmp_path))
    messages = log.read_all(run / "messages.jsonl")
    rewards = [m for m in messages if isinstance(m, StepRewards) and m.source == "rcl"]
    verdicts = {m.attempt_id: m.correct for m in messages if type(m).__name__ == "Verdict"}
    attempts = [m for m in messages if type(m).__name__ == "Attempt" and m.round == 1]
    untaught = [a for a in attempts if not a.prefix]
    taught = {a.parents[-1]: a for a in attempts if a.prefix}  # the explanation it read is its last parent
    assert len(rewards) == 2 and len(untaught) == 1 and len(taught) == 2
    for r in rewards:
        assert taught[r.attempt_id].prefix.strip() == next(m for m in messages if m.id == r.attempt_id).text.strip()
        assert r.score == float(verdicts[taught[r.attempt_id].id]) - float(verdicts[untaught[0].id])
    assert "reward (RCL)" in (run / "report.md").read_text()


def test_a_plot_of_negative_rewards_shows_them(tmp_path):
    import matplotlib.image

    from schoolroom.reporting.report import Figure, Series, draw

    draw(Figure(name="r", title="t", xlabel="iteration", ylabel="reward",
                series=[Series(label="reward", x=[1.0, 2.0, 3.0], y=[-1.6, -1.4, -1.1])]), tmp_path / "r.png")
    pixels = matplotlib.image.imread(tmp_path / "r.png")[..., :3]
    blue = ((pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.3)).sum()  # the line's colour (matplotlib's C0)
    assert blue > 200, "the line is drawn inside the axes, not clipped away below 0"
