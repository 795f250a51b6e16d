"""The self_explore protocol end to end on local Ray: SFT, sampling, exploration, two DPOs, evaluation."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import replays_alike

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.classroom import runner
from schoolroom.messages import Attempt, EvalReport, PreferencePair, StepRewards, TrainRequest, TrainResult
from schoolroom.protocols.self_explore import equations, outcome_pairs, rft_keep
from schoolroom.protocols.self_explore_data import equations_hold, false_equations


def tiny(address: str) -> dict:
    synthetic = {"source": "synthetic", "n": 3, "steps": [1, 2]}
    return {
        "run": {"name": "tiny_explore"},
        "runtime": {"address": address},
        "data": {"train": synthetic | {"seed": 1, "n": 6}, "eval": synthetic | {"seed": 2}},
        "agents": {
            "student": {"role": "student", "max_tokens": 40, "threads": 2, "resources": {"num_cpus": 0.5}},
            # the completer: the student's own model with the start adapter (the paper's)
            "explorer": {"role": "explorer", "max_tokens": 40, "threads": 2, "resources": {"num_cpus": 0.5}},
            "trainer": {"role": "trainer", "threads": 2, "resources": {"num_cpus": 1}},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        # FT fits the 3 gold solutions well enough that its samples at temperature 1 are right and wrong
        # the defaults otherwise: the whole wrong attempt rolled out from too, false-equation samples dropped
        "protocol": {"name": "self_explore", "samples": 4, "temperature": 1.0, "k": 2,
                     "sft": {"max_steps": 8, "batch_size": 4, "learning_rate": 3e-3},
                     "dpo": {"max_steps": 1, "batch_size": 4}, "dpo_sweep": [{"beta": 0.5}]},
    }


@pytest.fixture(scope="module")
def explore_run(tmp_path_factory):
    from conftest import ensure_ray

    ensure_ray()
    return runner.run(configlib.decode(tiny("local")), out=str(tmp_path_factory.mktemp("explore")))


@pytest.mark.slow
def test_self_explore_runs_end_to_end_on_ray(explore_run):
    run_dir = explore_run
    messages = log.read_all(run_dir / "messages.jsonl")
    results = {m.adapter.split("-")[0] for m in messages if isinstance(m, TrainResult)}
    rewards = [m for m in messages if isinstance(m, StepRewards)]
    step_pairs = [m for m in messages if isinstance(m, PreferencePair) and m.level == "step"]
    outcome = [m for m in messages if isinstance(m, PreferencePair) and m.level == "outcome"]
    attempts = {m.id: m for m in messages if isinstance(m, Attempt)}
    assert {"sft", "rft"} <= results and outcome, "FT, then RFT on its correct samples; outcome pairs from them"
    rft = next(m for m in messages if isinstance(m, TrainRequest) and m.name == "rft")
    assert rft.base_adapter is None, "RFT trains a fresh adapter from the base model"
    assert all(equations_hold(attempts[i].prefix + attempts[i].text) for i in rft.data if i in attempts)
    explored = [attempts[r.attempt_id] for r in rewards]
    assert sorted(a.id for a in explored) == sorted(x.parents[1] for x in outcome), \
        "the explored attempts are the rejected sides of the outcome pairs"
    for r in rewards:  # the real completer measured every prefix up to the pit, the whole attempt's when no pit came
        a = attempts[r.attempt_id]  # first (the authors'); a pit wherever none of a prefix's rollouts was right
        looked = len(a.steps) if r.first_pit is None else r.first_pit + 1
        assert len(r.rewards) == len(a.steps) and [x is not None for x in r.rewards] == \
            [i < looked for i in range(len(a.steps))] and r.rollouts == 2 * looked and r.start is None
        assert [i for i, x in enumerate(r.rewards) if x == 0][:1] == ([] if r.first_pit is None else [r.first_pit])
    assert sum(r.tokens for r in rewards) > 0
    for x in step_pairs:  # the pair's rejected side is the pit step of its attempt, its prefix the steps before
        (r,) = [r for r in rewards if r.attempt_id == x.parents[0]]
        a = attempts[x.parents[0]]
        assert r.first_pit == x.step and x.rejected == a.steps[x.step]
        assert x.prefix == "".join(s + "\n" for s in a.steps[: x.step])
    report = (run_dir / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Found**") and "step-level vs outcome-level DPO" in report
    assert report.splitlines()[4].startswith("- start: **rft**")
    assert "Held-out accuracy" in report and "First-pit position" in report and "rollout tokens" in report
    assert "the whole wrong attempt is rolled out from too" in report and "`is_eq_correct`" in report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step_pairs_found"] == len(step_pairs) and metrics["rollout_tokens"] == sum(r.tokens for r in rewards)
    evals = {m.name for m in messages if isinstance(m, EvalReport)}
    assert {"base", "sft", "rft", "outcome_dpo", "outcome_dpo@beta=0.5"} <= evals
    dpos = {m.name: m.hyper for m in messages if isinstance(m, TrainRequest) and m.kind == "dpo"}
    assert dpos["outcome_dpo"]["beta"] == 0.1 and dpos["outcome_dpo@beta=0.5"]["beta"] == 0.5, \
        "a sweep point trains with its own beta over the dpo settings"
    assert dpos["outcome_dpo@beta=0.5"] | {"beta": 0.1} == dpos["outcome_dpo"]
    assert "## DPO settings" in report and "| beta=0.5 |" in report
    assert set(metrics["dpo_settings"]) == {"dpo", "@beta=0.5"}
    assert (run_dir / "accuracy.png").exists()
    replays_alike(run_dir)


def test_a_completer_that_ignores_the_prefix_is_a_config_error():
    raw = tiny("inline")
    raw["agents"]["explorer"] = {"role": "explorer", "engine": "reference"}
    with pytest.raises(configlib.ConfigError, match=r"ignores the step prefix .* `\$.agents.explorer.engine`"):
        runner.protocol_of(configlib.decode(raw), "x.toml")
    raw = tiny("inline")
    raw["protocol"]["completer"] = "teacher"
    with pytest.raises(configlib.ConfigError, match="name it with teacher"):
        runner.protocol_of(configlib.decode(raw), "x.toml")
    raw["agents"]["gpt"] = {"role": "teacher", "engine": "openai", "model": "gpt-4o-mini"}
    with pytest.raises(configlib.ConfigError, match="must run teacher gpt's model"):
        runner.protocol_of(configlib.decode(raw), "x.toml")
    raw["agents"]["explorer"] |= {"engine": "openai", "model": "gpt-4o-mini"}
    runner.protocol_of(configlib.decode(raw), "x.toml")
    raw["protocol"]["dpo_sweep"] = [{"beta": 0.5}, {"lr": 1e-5}]
    with pytest.raises(configlib.ConfigError, match=r"lr.* `\$.protocol.dpo_sweep\[1\]`"):
        runner.protocol_of(configlib.decode(raw), "x.toml")


@pytest.mark.slow
def test_resume_after_a_crash_does_not_train_again(explore_run, tmp_path):
    from schoolroom.messages import Call

    whole = log.read_all(explore_run / "messages.jsonl")
    explored = next(i for i, m in enumerate(whole) if isinstance(m, Call) and m.method == "explore")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "config.toml").write_text((explore_run / "config.toml").read_text())
    shutil.copytree(explore_run / "adapters", crashed / "adapters")  # the crash leaves the run directory as it was
    lines = (explore_run / "messages.jsonl").read_bytes().splitlines(keepends=True)
    (crashed / "messages.jsonl").write_bytes(b"".join(lines[: explored + 2]))  # header + up to the explore call
    runner.run(configlib.decode(tiny("inline")), resume=crashed)
    after = log.read_all(crashed / "messages.jsonl")
    trained = [m.method for m in after if isinstance(m, Call) and m.agent == "trainer"]
    assert trained == [m.method for m in whole if isinstance(m, Call) and m.agent == "trainer"], \
        "the SFT adapter made before the crash is reused; the DPOs after it are trained once"
    names = [m.name for m in after if isinstance(m, EvalReport)]
    assert len(names) == len(set(names)) == len([m for m in whole if isinstance(m, EvalReport)])
    assert [m.kind for m in after if isinstance(m, TrainRequest)] == \
        [m.kind for m in whole if isinstance(m, TrainRequest)], "the protocol's requests keep their ids"


def test_outcome_pairs_take_the_most_different_wrong_sample_once():
    from schoolroom.environment import synthetic

    p, q = synthetic(2, steps=1, seed=0)
    good = [Attempt(problem_id=p.problem_id, text=t) for t in ("3 + 4 = 7\n#### 7", "7\n#### 7")]
    bad = [Attempt(problem_id=p.problem_id, text=t) for t in ("3 + 4 = 8\n#### 8", "I think it is 12.\n#### 12",
                                                               "3 + 4 = 8\n#### 8")] + \
          [Attempt(problem_id=q.problem_id, text="bad")]
    pairs = outcome_pairs([p, q], good, bad)
    assert [(x.chosen, x.rejected) for x in pairs] == [("3 + 4 = 7\n#### 7", "I think it is 12.\n#### 12"),
                                                       ("7\n#### 7", "3 + 4 = 8\n#### 8")]
    assert all(x.level == "outcome" and x.prefix == "" and x.prompt == p.question for x in pairs)
    assert pairs[0].parents == (good[0].id, bad[1].id)


def test_rft_keeps_distinct_correct_samples_by_their_equations():
    texts = ["3 + 4 = 7\n#### 7", "4 + 3 = 7\n#### 7", "3+4 = 7\nSo 7.\n#### 7", "3 + 4 = 7\n#### 7", "7\n#### 7"]
    correct = [Attempt(problem_id="p", text=t) for t in texts] + [Attempt(problem_id="q", text="1 + 1 = 2\n#### 2")]
    kept = rft_keep(correct, at_most=8)
    assert [a.text for a in kept if a.problem_id == "p"] == [texts[2], texts[1], texts[4]], \
        "one per equation string (the one farther from the others), exact repeats dropped"
    assert len(rft_keep(correct, at_most=2)) == 3
    assert equations("So 3 * 4 = 12 and 12 - 2 = 10.") == "3*4=12|12-2=10"


def test_rft_drops_correct_samples_whose_equations_are_false():
    # the right final answer after a false equation (the authors' is_eq_correct drops it)
    texts = ["3 + 4 = 8\n#### 7", "3 + 4 = 7\n#### 7", "4 * 2 = 8, 8 - 1 = 6. So 7.\n#### 7", "7\n#### 7"]
    correct = [Attempt(problem_id="p", text=t) for t in texts]
    assert [a.text for a in rft_keep(correct, at_most=8)] == [texts[1], texts[3]]
    assert [a.text for a in rft_keep(correct, at_most=8, check_equations=False)] == texts


def test_a_repeat_of_a_replaced_sample_does_not_come_back():
    a, b = "3 + 4 = 7\n#### 7", "So 3 + 4 = 7 apples in all\n#### 7"  # the same equations
    o1, o2 = "7 apples\n#### 7", "So 3 + 4 is 7 apples in all\n#### 7"
    # b replaces a (farther from o1); once o2 is kept, a repeat of a would be farther from the others than b, but
    # a was seen already (the authors' set(preds) over every sample)
    correct = [Attempt(problem_id="p", text=t) for t in (a, o1, b, o2, a)]
    assert [x.text for x in rft_keep(correct, at_most=8)] == [b, o1, o2]


@pytest.mark.parametrize("text,false", [
    ("Emma has 26 - 21 = 5 marbles left.\nShe has 5 * 3 = 15.\n#### 15", []),
    ("So 3 + 4 = 8 apples.", ["3 + 4 = 8"]),
    ("2 * 3 = 6 * 1 = 7", ["6 * 1 = 7"]),  # a chain: every "=" is an equation
    ("3 + 4 = 7. 5 + 1 = 7.", ["7. 5 + 1 = 7."]),
    ("1,200 / 4 = 300; 3 x 4 = 12; $12 / 4 = $3; 10 / 3 = 3.33; 60 / 3/4 = 80; (3 + 4) * 2 = 14", []),
    ("3x4=13; <<48/2=25>>25; 5 / 0 = 0; 10 / 3 = 3.4", ["3 * 4 = 13", "48/2 = 25", "5 / 0 = 0", "10 / 3 = 3.4"]),
    # words, units and percents are not read: these are not judged
    ("50% of 20 = 10, 3/4 of 60 = 45, 72 cm * 2/3 = 48, 20 / 100 = 20%, 17/3 = 5 and 2/3, 8 x 1 1/2 = 12", []),
    ("__import__('os').system('exit 1') = 1 and 9**99999999 = 1 and " + "1 " * 3000, []),  # never run
])
def test_equations_are_checked_as_written(text, false):
    assert false_equations(text) == false and equations_hold(text) == (not false)
