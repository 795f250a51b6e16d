"""A teacher grades the tokens a student wrote (on-policy distillation's signal): Teacher.logprobs on the real model."""

from __future__ import annotations

import pytest
import torch

from schoolroom import models
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import Student, solve_prompt
from schoolroom.agents.teacher import Teacher
from schoolroom.config import AgentConfig
from schoolroom.environment import synthetic
from schoolroom.messages import Attempt


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
