"""The reinforce protocol on local Ray (Student, Verifiers with reward models, Explorer, Trainer as actors), its
resume after a crash, best-of-N reranking with the reward models it trained, and the PRM800K loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import crashed_copy, replays_alike

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.agents.engines.hf import HFEngine
from schoolroom.agents.student import Student
from schoolroom.classroom import runner
from schoolroom.config import AgentConfig
from schoolroom.environment.prm800k import load_prm800k
from schoolroom.messages import Attempt, Call, EvalReport, StepRewards, TrainRequest, TrainResult
from schoolroom.protocols.best_of_n import canonical, majority

ARMS = [{"name": "answer"}, {"name": "grpo-answer", "algorithm": "grpo"},
        {"name": "orm", "reward": "orm"}, {"name": "prm-min", "reward": "prm", "aggregate": "min", "step_rewards": True}]


def tiny(address: str, **protocol) -> dict:
    synthetic = {"source": "synthetic", "n": 4, "steps": [1]}
    small = {"threads": 2, "resources": {"num_cpus": 0.25}}
    return {
        "run": {"name": "tiny_rl"},
        "runtime": {"address": address},
        "data": {"train": synthetic | {"seed": 1}, "eval": synthetic | {"seed": 2, "n": 2}},
        "agents": {
            "student": {"role": "student", "max_tokens": 20, **small},
            "explorer": {"role": "explorer", "max_tokens": 20, **small},
            "trainer": {"role": "trainer", **small},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
            "orm": {"role": "verifier", **small},
            "prm": {"role": "verifier", **small},
        },
        "protocol": {"name": "reinforce", "start": "base", "iterations": 1, "batch": 2, "n": 2, "temperature": 1.0,
                     "reward_samples": 2, "rollouts_k": 2, "max_explore": 2,
                     "prm_labels": ["rollouts", "human"], "human_limit": 3,
                     "orm_settings": {"max_steps": 1}, "prm_settings": {"max_steps": 1},
                     "ppo": {"max_steps": 1, "batch_size": 4}, "grpo": {"max_steps": 1, "batch_size": 4},
                     "arms": ARMS} | protocol,
    }


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    from conftest import ensure_ray

    ensure_ray()
    return runner.run(configlib.decode(tiny("local")), out=str(tmp_path_factory.mktemp("rl")))


@pytest.mark.slow
def test_one_ppo_and_one_grpo_iteration_through_ray(rl_run):
    replays_alike(rl_run)
    messages = log.read_all(rl_run / "messages.jsonl")
    calls = [(c.agent, c.method) for c in messages if isinstance(c, Call) and c.round == 1]
    # every arm's iteration: rollouts -> check -> score -> train -> load, each a logged call
    assert calls[:5] == [("student", "solve"), ("verifier", "check"), ("verifier", "score"), ("trainer", "train"),
                         ("student", "load")]
    assert ("orm", "score") in calls and ("prm", "score") in calls
    requests = {r.name: r for r in messages if isinstance(r, TrainRequest)}
    assert [requests[a["name"]].kind for a in ARMS] == ["ppo", "grpo", "ppo", "ppo"]
    assert requests["prm-min"].hyper["step_rewards"] and requests["orm"].kind == "ppo"
    assert (requests["orm_model"].kind, requests["prm_model"].kind) == ("orm", "prm")
    rewards = [m for m in messages if isinstance(m, StepRewards)]
    assert {r.source for r in rewards} == {"rollouts", "human", "answer", "orm", "prm"}
    human = [r.id for r in rewards if r.source == "human"]
    # the 3 human-labelled solutions are of 2 problems: one problem is held out of the PRM's training to check it on
    assert len(human) == 2 and set(human) <= set(requests["prm_model"].data), "the PRM learns from PRM800K labels too"
    rollouts = {m.id for m in messages if isinstance(m, Attempt) and m.round == 1 and m.sender == "student"}
    assert all(m.token_ids and len(m.logprobs) == m.tokens for m in messages if m.id in rollouts)
    for r in requests.values():  # the RL updates train on logged rollouts and their logged scores
        if r.kind in ("ppo", "grpo"):
            assert rollouts & set(r.data) and all(any(m.id == i for m in messages) for i in r.data)
    results = {m.adapter.split("-r")[0]: m for m in messages if isinstance(m, TrainResult)}
    for name in ("answer", "grpo-answer", "orm", "prm-min"):
        m = results[name].metrics
        assert m["rollouts"] == 4 and m["steps"] == 1 and "entropy" in m and "reward_mean" in m
        # trained on the sampled ids: the trainer's old log-probs are the engine's (to its 4 logged decimals; the
        # engine samples in float32, so a trainer in bf16 autocast, where the CPU has it, is further off)
        assert m["retokenized_rollouts"] == 0 and m["logprob_gap"] < (0.1 if m["bf16"] else 1e-3), m
        assert (Path(results[name].path) / "adapter_model.safetensors").exists()
    assert (Path(results["answer"].path) / "value_head.safetensors").exists()
    evals = {m.name for m in messages if isinstance(m, EvalReport)}
    assert evals == {"start", "answer/it1", "grpo-answer/it1", "orm/it1", "prm-min/it1"}
    report = (rl_run / "report.md").read_text()
    assert "## Reward models" in report and "| answer | 1 |" in report and "| prm-min | 1 |" in report
    assert "## PRM on human step labels of held-out problems" in report and "| position |" in report
    metrics = json.loads((rl_run / "metrics.json").read_text())
    assert set(metrics["accuracy"]["eval"]) == {"start", "answer", "grpo-answer", "orm", "prm-min"}
    first = metrics["iterations"][0]  # the numbers of each update, not the rollouts themselves
    assert first["rollouts"] == 4 and not {"attempts", "rewards", "correct"} & set(first)
    assert (rl_run / "accuracy_per_iteration.png").exists() and (rl_run / "rl_kl.png").exists()


@pytest.mark.slow
def test_overlap_writes_the_next_rollouts_with_the_adapter_before_while_the_trainer_trains(tmp_path):
    """``overlap``: iteration 2's rollouts are asked in round 1, after the update is started and before its adapter
    is loaded, so the start adapter writes them; the update trains on them against their sampling log-probs."""
    from conftest import ensure_ray

    ensure_ray()
    cfg = tiny("local", iterations=2, overlap=True, arms=[{"name": "grpo", "algorithm": "grpo"}],
               grpo={"max_steps": 1, "batch_size": 4})
    run = runner.run(configlib.decode(cfg), out=str(tmp_path / "run"))
    replays_alike(run)
    messages = log.read_all(run / "messages.jsonl")
    calls = [(c.agent, c.method, c.round) for c in messages if isinstance(c, Call) and c.agent != "verifier"
             and c.round > 0]
    assert calls[:6] == [("student", "solve", 1), ("trainer", "train", 1), ("student", "solve", 1),
                         ("student", "load", 1), ("trainer", "train", 2), ("student", "load", 2)], calls
    # (no solve in round 2 before its update: iteration 2's rollouts were asked in round 1)
    requests = [m for m in messages if isinstance(m, TrainRequest)]
    assert [r.hyper["old_logprobs"] for r in requests] == ["sampled"] * 2
    by_id = {m.id: m for m in messages}
    adapters = [{by_id[i].adapter for i in r.data if isinstance(by_id.get(i), Attempt)} for r in requests]
    assert adapters[0] == adapters[1] == {None}, "iteration 2's rollouts come from the start, one step behind"
    results = [m for m in messages if isinstance(m, TrainResult) and m.request_id]
    assert all(r.metrics["steps"] == 1 for r in results)
    assert "Overlap (one step off-policy" in (run / "report.md").read_text()


def test_old_logprobs_sampled_refuses_rollouts_without_the_engines_log_probs():
    import torch

    from schoolroom.training.rl import Experience, behaviour

    rows = [Experience(ids=[1, 2, 3], start=1, actions=2, rewards={}, score=0.0, group=0, sampled=True,
                       engine_logp=[-0.5, -1.5], old_logp=torch.tensor([-1.0, -1.0]))]
    behaviour(rows, {"old_logprobs": "policy"})
    assert rows[0].behaviour_logp.tolist() == [-1.0, -1.0]
    behaviour(rows, {"old_logprobs": "sampled"})
    assert rows[0].behaviour_logp.tolist() == [-0.5, -1.5]
    rows[0].engine_logp = None
    with pytest.raises(ValueError, match="needs the engine's sampling log-probabilities"):
        behaviour(rows, {"old_logprobs": "sampled"})


@pytest.mark.slow
def test_a_fresh_student_loads_the_rl_adapters(rl_run):
    messages = log.read_all(rl_run / "messages.jsonl")
    problems = [m for m in messages if type(m).__name__ == "Problem"][:1]
    student = Student("student", AgentConfig(role="student", max_tokens=8), engine=HFEngine(batch_size=2))
    for result in (m for m in messages if isinstance(m, TrainResult) and m.request_id):
        if result.adapter.startswith(("answer", "grpo")):
            assert student.load(result) == result.adapter
            assert student.solve(problems)[0].adapter == result.adapter


@pytest.mark.slow
def test_a_resumed_reinforce_run_trains_nothing_twice(rl_run, tmp_path):
    whole = log.read_all(rl_run / "messages.jsonl")
    trained = [i for i, m in enumerate(whole) if isinstance(m, Call) and m.method == "train"]
    cut = trained[3]  # the reward models and the first arm's update are logged; the crash comes after
    crashed = crashed_copy(rl_run, tmp_path / "crashed", keep=cut + 2, torn=40, adapters=True)
    runner.run(configlib.decode(tiny("inline")), resume=crashed)
    after = log.read_all(crashed / "messages.jsonl")
    train_calls = [m for m in after if isinstance(m, Call) and m.method == "train"]
    assert len(train_calls) == len(trained), "each adapter is trained once: those before the crash are not redone"
    assert len({c.key for c in train_calls}) == len(train_calls)
    assert [m.id for m in after if isinstance(m, TrainRequest)] == [m.id for m in whole if isinstance(m, TrainRequest)]
    names = [m.name for m in after if isinstance(m, EvalReport)]
    assert sorted(names) == sorted(m.name for m in whole if isinstance(m, EvalReport))


@pytest.mark.slow
def test_best_of_n_reranks_with_the_trained_reward_models(rl_run, tmp_path):
    """best_of_n loads the ORM and PRM the reinforce run trained (no training) and reranks samples with them."""
    messages = log.read_all(rl_run / "messages.jsonl")
    rms = {m.adapter.split("-r")[0]: m.path for m in messages if isinstance(m, TrainResult)}
    cfg = tiny("inline")
    cfg["protocol"] = {"name": "best_of_n", "start": "base", "n": 3, "temperature": 1.0,
                       "orm_adapter": rms["orm_model"], "prm_adapter": rms["prm_model"]}
    run_dir = runner.run(configlib.decode(cfg), out=str(tmp_path))
    logged = log.read_all(run_dir / "messages.jsonl")
    assert not any(isinstance(m, Call) and m.method == "train" for m in logged), "the reward models were loaded"
    assert {(c.agent, c.method) for c in logged if isinstance(c, Call)} >= {("orm", "score"), ("prm", "score"),
                                                                            ("orm", "load"), ("prm", "load")}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    acc = metrics["accuracy"]
    assert set(acc) == {"greedy", "majority", "orm", "prm-min", "prm-max", "prm-avg", "prm-prod", "prm-last", "pass@3"}
    assert all(acc[k]["accuracy"] <= acc["pass@3"]["accuracy"] for k in acc if k != "greedy")
    assert metrics["by_n"]["n"] == [1, 2, 3] and len(metrics["by_n"]["orm"]) == 3
    report = (run_dir / "report.md").read_text()
    assert (run_dir / "best_of_n.png").exists() and "Accuracy as N grows" in report
    assert f"PRM labels: loaded from `{rms['prm_model']}`" in report, "a loaded model's training is not described"
    assert "within a problem" in report and set(metrics["auc_within_problem"]) == set(metrics["auc"])
    replays_alike(run_dir)


def test_majority_vote_and_canonical_answers():
    a = [Attempt(problem_id="p", text="", answer=x) for x in (None, "12", "$12.00", "7", "7", "7.0")]
    assert canonical("$1,000") == canonical("1000") and canonical(None) is None
    assert majority(a) == 3  # 7 (three votes) over 12 (two); the first attempt stating it
    assert majority(a[:3]) == 1 and majority(a[:1]) == 0


def test_prm800k_layout_loads_every_rated_step(data_dir, tmp_path):
    folder = data_dir / "prm800k_phase1_test_stepwise_critique_derived"
    rows = load_prm800k(folder)
    import pyarrow.parquet as pq

    table = pq.read_table(next(folder.glob("*.parquet"))).to_pylist()
    assert len({p.problem_id for p, _, _ in rows}) == 101  # the data README's count
    labels = {}
    for p, a, r in rows:
        assert len(a.steps) == len(r.rewards) and r.source == "human" and r.attempt_id == a.id
        for i, (step, y) in enumerate(zip(a.steps, r.rewards)):
            labels[p.question, a.steps[:i], step] = y
    want = {1: 1.0, 0: 1.0, -1: 0.0}
    for row in table:  # every rated step of the file is in some path, with its rating
        key = (row["instruction"], tuple(row["responses"] or ()), row["next_response"])
        if row["rating"] is not None:
            assert labels[key] == want[row["rating"]], key
        elif row["is_human_response"]:
            assert labels[key] == 1.0
    skip = load_prm800k(folder, neutral="skip", limit=50)
    assert len(skip) == 50 and None in {y for _, _, r in skip for y in r.rewards}
    bad = tmp_path / "x.jsonl"
    bad.write_text(json.dumps({"instruction": "q", "next_response": "s"}) + "\n")
    with pytest.raises(ValueError, match="not the PRM800K stepwise layout, no rating, responses field"):
        load_prm800k(bad)
    good = tmp_path / "y.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "q", "responses": [], "next_response": "a", "rating": 1},
        {"instruction": "q", "responses": ["a"], "next_response": "b", "rating": -1},
        {"instruction": "q", "responses": ["a"], "next_response": "c", "rating": 0}]) + "\n")
    assert sorted((a.steps, r.rewards) for _, a, r in load_prm800k(good)) == [
        (("a", "b"), (1.0, 0.0)), (("a", "c"), (1.0, 1.0))]


def test_reinforce_settings_are_checked_before_anything_starts():
    cfg = tiny("inline")
    cfg["protocol"]["arms"] = [{"name": "x", "reward": "prm", "aggregate": "median"}]
    with pytest.raises(configlib.ConfigError, match=r"aggregate is one of min, max, avg, prod, last.*\$\.protocol\.arms\[0\]"):
        runner.protocol_of(configlib.decode(cfg), "x.toml")
    cfg["protocol"]["arms"] = [{"name": "x"}]
    cfg["protocol"]["mix"] = [0.5, 0.5]
    with pytest.raises(configlib.ConfigError, match="mix gives 2 shares for 1 train sets"):
        runner.protocol_of(configlib.decode(cfg), "x.toml")
