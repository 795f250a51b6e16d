"""The self_explore protocol end to end on local Ray: SFT, sampling, exploration, two DPOs, evaluation."""

from __future__ import annotations

import json
import shutil

import pytest

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.messages import EvalReport, PreferencePair, StepRewards, TrainRequest, TrainResult
from schoolroom.protocols import runner
from schoolroom.protocols.self_explore import outcome_pairs

pytestmark = pytest.mark.slow


def tiny(address: str) -> dict:
    synthetic = {"source": "synthetic", "n": 3, "steps": [1, 2]}
    return {
        "run": {"name": "tiny_explore"},
        "runtime": {"address": address},
        "data": {"train": synthetic | {"seed": 1}, "eval": synthetic | {"seed": 2}},
        "agents": {
            "student": {"role": "student", "max_tokens": 24, "threads": 2, "resources": {"num_cpus": 0.5}},
            # the oracle completer of the paper's ablation: here the gold solution, so pits are certain
            "explorer": {"role": "explorer", "engine": "reference", "resources": {"num_cpus": 0}},
            "trainer": {"role": "trainer", "threads": 2, "resources": {"num_cpus": 1}},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        "protocol": {"name": "self_explore", "samples": 2, "temperature": 1.0, "k": 2, "completer": "teacher",
                     "sft": {"max_steps": 1, "batch_size": 4}, "dpo": {"max_steps": 1, "batch_size": 4}},
    }


@pytest.fixture(scope="module")
def explore_run(tmp_path_factory):
    from conftest import ensure_ray

    ensure_ray()
    return runner.run(configlib.decode(tiny("local")), out=str(tmp_path_factory.mktemp("explore")))


def test_self_explore_runs_end_to_end_on_ray(explore_run):
    run_dir = explore_run
    messages = log.read_all(run_dir / "messages.jsonl")
    results = {m.adapter.split("-")[0] for m in messages if isinstance(m, TrainResult)}
    rewards = [m for m in messages if isinstance(m, StepRewards)]
    pairs = [m for m in messages if isinstance(m, PreferencePair) and m.level == "step"]
    assert rewards and pairs and {"sft", "step_dpo"} <= results
    assert all(r.first_pit is not None for r in rewards), "the gold-solution completer always reaches the answer"
    evals = {m.name for m in messages if isinstance(m, EvalReport)}
    assert {"base", "sft", "step_dpo"} <= evals
    for result in (m for m in messages if isinstance(m, TrainResult)):
        assert (run_dir / "adapters" / result.adapter / "adapter_model.safetensors").exists()
    report = (run_dir / "report.md").read_text()
    assert "Held-out accuracy" in report and "First-pit position" in report and "rollout tokens" in report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step_pairs"] == len(pairs) and metrics["rollout_tokens"] >= 0
    assert (run_dir / "accuracy.png").exists() and (run_dir / "first_pit.png").exists()


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


def test_outcome_pairs_pair_right_with_wrong_of_the_same_problem():
    from schoolroom.environment import synthetic
    from schoolroom.messages import Attempt

    p, q = synthetic(2, steps=1, seed=0)
    attempts = [Attempt(problem_id=p.problem_id, text=t) for t in ("good", "bad1", "bad2")] + \
               [Attempt(problem_id=q.problem_id, text="bad")]
    pairs = outcome_pairs([p, q], attempts, [True, False, False, False])
    assert [(x.chosen, x.rejected) for x in pairs] == [("good", "bad1"), ("good", "bad2")]
    assert all(x.level == "outcome" and x.prefix == "" and x.prompt == p.question for x in pairs)
