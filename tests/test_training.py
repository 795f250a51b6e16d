"""The Trainer: real TRL SFT and DPO steps on a Ray actor; adapters load in a fresh Student and in plain peft."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ensure_ray

from schoolroom import models
from schoolroom.agents.hosting.actors import spawn
from schoolroom.agents.engines.hf import HFEngine
from schoolroom.agents.kinds import dpo_examples
from schoolroom.agents.student import Student
from schoolroom.agents.trainer import Trainer
from schoolroom.config import AgentConfig, Resources, RuntimeConfig
from schoolroom.environment import solution_text, synthetic
from schoolroom.messages import PreferencePair, Rationale, TrainRequest, TrainResult
from schoolroom.training.logprobs import preference_margin

pytestmark = pytest.mark.slow

PROBLEMS = synthetic(4, steps=2, seed=11)
GOLD = [Rationale(problem_id=p.problem_id, text=solution_text(p.gold_steps, p.answer), source="gold") for p in PROBLEMS]
PAIRS = [PreferencePair(problem_id=p.problem_id, prompt=p.question, prefix=p.gold_steps[0] + "\n",
                        chosen=p.gold_steps[1] + f"\n#### {p.answer}", rejected=f"So the answer is {int(p.answer) + 7}.")
         for p in PROBLEMS]


def plain_peft(path: str):
    """Load an adapter the way a user would outside the framework: transformers + peft, nothing of ours."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(models.resolve("smollm2-135m-instruct").path)
    return PeftModel.from_pretrained(base, path).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One SFT step, then one DPO step continuing it, each through the Trainer as a Ray actor."""
    ensure_ray()
    workdir = tmp_path_factory.mktemp("run")
    host = spawn("trainer", AgentConfig(role="trainer", resources=Resources(num_cpus=1)),
                 RuntimeConfig(address="local"), workdir=str(workdir))
    sft_request = TrainRequest(kind="sft", name="sft", data=tuple(r.id for r in GOLD), seed=0,
                               hyper={"max_steps": 1, "batch_size": 4})
    sft, _ = host.result(host.submit("train", sft_request, GOLD, PROBLEMS), 900)
    dpo_request = TrainRequest(kind="dpo", name="dpo", data=tuple(x.id for x in PAIRS), base_adapter=sft.adapter,
                               seed=0, hyper={"max_steps": 1, "batch_size": 4, "learning_rate": 5e-4})
    dpo, _ = host.result(host.submit("train", dpo_request, PAIRS, PROBLEMS), 900)
    host.kill()
    return workdir, sft, dpo


def test_sft_and_dpo_steps_make_adapters(trained):
    workdir, sft, dpo = trained
    for result, kind in ((sft, "sft"), (dpo, "dpo")):
        assert isinstance(result, TrainResult) and result.adapter.startswith(kind)
        path = Path(result.path)
        assert path.parent == workdir / "adapters" and path.name == result.adapter
        assert (path / "adapter_config.json").exists() and (path / "adapter_model.safetensors").exists()
        assert result.metrics["steps"] == 1.0 and result.metrics["train_loss"] > 0
    assert not (Path(dpo.path) / "ref").exists(), "only the policy adapter is saved, not TRL's frozen reference"
    assert "last_rewards_margins" in dpo.metrics


def test_dpo_raises_the_margin_of_chosen_over_rejected(trained):
    _, sft, dpo = trained
    trainer = Trainer("t", AgentConfig(role="trainer"))
    pairs = dpo_examples(trainer, PAIRS, {p.problem_id: p for p in PROBLEMS})
    tok = models.load_tokenizer("smollm2-135m-instruct")
    before = preference_margin(plain_peft(sft.path), tok, pairs)
    after = preference_margin(plain_peft(dpo.path), tok, pairs)
    assert after > before, (before, after)


def test_a_fresh_student_loads_the_adapter(trained):
    _, _, dpo = trained
    student = Student("student", AgentConfig(role="student", max_tokens=12), engine=HFEngine(batch_size=4))
    assert student.load(dpo) == dpo.adapter
    attempts = student.solve(PROBLEMS[:2])
    assert all(a.adapter == dpo.adapter and a.text for a in attempts)
    student.load(None)
    assert student.solve(PROBLEMS[:1])[0].adapter is None


def test_the_student_answers_differently_with_an_adapter(answer_42_adapter):
    student = Student("student", AgentConfig(role="student", max_tokens=12), engine=HFEngine(batch_size=4))
    base = student.solve(PROBLEMS)
    student.load(answer_42_adapter)
    tuned = student.solve(PROBLEMS)
    assert [a.answer for a in tuned] == ["42"] * 4 and [a.answer for a in base] != ["42"] * 4


def test_the_classroom_asks_again_once_an_adapter_is_loaded(answer_42_adapter, tmp_path):
    from schoolroom import config as configlib
    from schoolroom.classroom.room import Classroom
    from schoolroom.log import Writer

    cfg = configlib.decode({"runtime": {"address": "inline"},
                            "data": {"eval": {"source": "synthetic", "n": 3, "steps": [1], "seed": 5}},
                            "agents": {"student": {"role": "student", "max_tokens": 12}}})
    with Writer(tmp_path / "messages.jsonl") as w:
        room = Classroom(cfg, w, "run", workdir=str(tmp_path))
        problems = room.problems("eval")
        base = room.student.solve(problems)
        assert room.student.solve(problems) == base, "the same question of the same student is answered once"
        room.student.load(answer_42_adapter)
        tuned = room.student.solve(problems)
        room.close()
    assert [a.answer for a in tuned] == ["42"] * 3 and [a.answer for a in base] != ["42"] * 3
