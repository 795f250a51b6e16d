"""A teacher grades the tokens a student wrote (on-policy distillation's signal): Teacher.logprobs on the real model."""

from __future__ import annotations

import pytest
import torch

from schoolroom import models
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import Student, solve_prompt
from schoolroom.agents.teacher import Teacher
from schoolroom.agents.trainer import Trainer
from schoolroom.config import AgentConfig
from schoolroom.environment import synthetic
from schoolroom.messages import Attempt, TrainRequest


def plain_logprobs(engine, prompt_text: str, ids: tuple[int, ...]) -> list[float]:
    """One sequence, one forward pass, no batching or padding: what the teacher's scores must equal."""
    head = engine.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = engine.lm(torch.tensor([head + list(ids)])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [logp[len(head) - 1 + i, t].item() for i, t in enumerate(ids)]


def test_teacher_logprobs_equal_a_plain_forward_pass_of_the_same_ids(hf_engine):
    problems = synthetic(2, steps=2, seed=3)
    attempts = Student("student", AgentConfig(role="student", max_tokens=24), engine=hf_engine).solve(
        problems, n=2, temperature=1.0)
    teacher = Teacher("teacher", AgentConfig(role="teacher"), engine=hf_engine)
    scores = teacher.logprobs(attempts, problems)
    by_id = {p.problem_id: p for p in problems}
    assert len(scores) == len(attempts) == 4
    for a, s in zip(attempts, scores):
        assert (s.attempt_id, s.parents, s.context, s.model) == (a.id, (a.id,), "question", "smollm2-135m-instruct")
        plain = plain_logprobs(hf_engine, render_prompt(hf_engine.tokenizer, solve_prompt(by_id[a.problem_id])),
                               a.token_ids)
        assert len(s.logprobs) == len(a.token_ids) and max(abs(x - y) for x, y in zip(s.logprobs, plain)) < 1e-3
        # the same model sampled these tokens at temperature 1: its sampling log-probabilities are the teacher's
        assert max(abs(x - y) for x, y in zip(s.logprobs, a.logprobs)) < 2e-3
    privileged = teacher.logprobs(attempts, problems, context="solution")
    assert [len(p.logprobs) for p in privileged] == [len(s.logprobs) for s in scores]
    assert all(p.context == "solution" for p in privileged)
    assert any(abs(x - y) > 1e-2 for p, s in zip(privileged, scores) for x, y in zip(p.logprobs, s.logprobs))


def test_a_teacher_refuses_a_student_on_another_tokenizer(hf_engine, monkeypatch):
    class OtherVocabulary:
        def get_vocab(self):
            return {"hello": 0}

    monkeypatch.setattr(models, "load_tokenizer", lambda model: OtherVocabulary())
    (p,) = synthetic(1, steps=1, seed=3)
    a = Attempt(problem_id=p.problem_id, text="1", model="other-model", token_ids=(16,))
    with pytest.raises(ValueError, match="teacher smollm2-135m-instruct and student other-model have different"):
        Teacher("teacher", AgentConfig(role="teacher"), engine=hf_engine).logprobs([a], [p])


def test_a_teacher_refuses_attempts_without_token_ids(hf_engine):
    (p,) = synthetic(1, steps=1, seed=3)
    a = Attempt(problem_id=p.problem_id, text="1", model="smollm2-135m-instruct")
    with pytest.raises(ValueError, match="has no token ids"):
        Teacher("teacher", AgentConfig(role="teacher"), engine=hf_engine).logprobs([a], [p])


def distill(hf_engine, trainer, teacher_adapter=None):
    """The base student samples; a teacher (the same model, or with ``teacher_adapter``) scores its tokens; one
    ``opd`` update. Returns the attempts, the teacher's scores and the TrainResult."""
    problems = synthetic(2, steps=1, seed=3)
    attempts = Student("student", AgentConfig(role="student", max_tokens=24), engine=hf_engine).solve(
        problems, n=2, temperature=1.0)
    teacher = Teacher("teacher", AgentConfig(role="teacher"), engine=hf_engine)
    teacher.load(teacher_adapter)
    try:
        scores = teacher.logprobs(attempts, problems)
    finally:
        teacher.load(None)
    request = TrainRequest(kind="opd", name="opd", data=tuple(m.id for m in attempts + scores),
                           hyper={"max_steps": 1, "batch_size": 4, "learning_rate": 1e-3})
    return problems, attempts, scores, trainer.train(request, attempts + scores, problems)


@pytest.mark.slow
def test_the_opd_advantage_is_zero_when_the_teacher_is_the_student(hf_engine, tmp_path):
    # float32 as the teacher computes: bf16 autocast alone moves a recomputed log-probability by ~0.02
    trainer = Trainer("trainer", AgentConfig(role="trainer", dtype="float32"), workdir=str(tmp_path))
    *_, result = distill(hf_engine, trainer)
    assert not result.failed and result.metrics["rollouts"] == 4
    assert result.metrics["advantage_abs"] < 2e-3, result.metrics  # log pi_s - log pi_t, token by token


@pytest.mark.slow
def test_one_opd_step_moves_the_student_toward_its_teacher(hf_engine, answer_42_adapter, tmp_path):
    """The teacher answers "#### 42" to everything: it finds the student's own tokens unlikely (a large reverse KL
    on them), and one update brings the student's log-probabilities of those tokens toward the teacher's."""
    trainer = Trainer("trainer", AgentConfig(role="trainer"), workdir=str(tmp_path))
    problems, attempts, scores, result = distill(hf_engine, trainer, answer_42_adapter)
    assert result.metrics["advantage_mean"] < -0.1, result.metrics  # the teacher disagrees

    def reverse_kl() -> float:
        student = Teacher("scorer", AgentConfig(role="teacher"), engine=hf_engine).logprobs(attempts, problems)
        return sum(sum(s.logprobs) - sum(t.logprobs) for s, t in zip(student, scores)) / sum(a.tokens for a in attempts)

    before = reverse_kl()
    hf_engine.load_adapter(result.adapter, result.path)
    try:
        after = reverse_kl()
    finally:
        hf_engine.unload_adapter()
    assert after < before, (before, after)
