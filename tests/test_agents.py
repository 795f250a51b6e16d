"""Each agent method without Ray, on the real model where it generates."""

from __future__ import annotations

import pytest
import torch

from schoolroom.agents.engines import Completion, Engine
from schoolroom.agents.engines.reference import ReferenceEngine
from schoolroom.agents.student import Student, guidance_prefix
from schoolroom.agents.teacher import Teacher
from schoolroom.agents.verifier import Verifier
from schoolroom.config import AgentConfig
from schoolroom.environment import synthetic
from schoolroom.messages import Attempt, Guidance, Note, Usage, Verdict


def student_with(engine, **cfg) -> Student:
    return Student("student", AgentConfig(role="student", **cfg), engine=engine)


@pytest.mark.slow
def test_student_solves_with_and_without_guidance(hf_engine):
    problems = synthetic(2, steps=2, seed=4)
    student = student_with(hf_engine, max_tokens=32)
    teacher = Teacher("reference", AgentConfig(role="teacher", engine="reference"), engine=ReferenceEngine())
    guidance = teacher.guide(problems, 1)
    assert [g.steps for g in guidance] == [p.gold_steps[:1] for p in problems]
    plain = student.solve(problems)
    guided = student.solve(problems, guidance)
    for p, a, b, g in zip(problems, plain, guided, guidance):
        assert isinstance(a, Attempt) and a.problem_id == p.problem_id and a.prefix == "" and a.parents == (p.id,)
        assert b.prefix == p.gold_steps[0] + "\n" and b.parents == (p.id, g.id)
        assert b.steps[0] == p.gold_steps[0], "the guidance is the first step of the attempt"
        assert a.model == "smollm2-135m-instruct" and a.adapter is None and 0 < a.tokens <= 32
    usage = [m for m in student.drain() if isinstance(m, Usage)]
    assert len(usage) == 2 and all(u.completion_tokens > 0 and u.agent == "student" for u in usage)
    samples = student.solve(problems[:1], n=3, temperature=1.0)
    assert [a.sample for a in samples] == [0, 1, 2]


def test_student_on_the_reference_engine_writes_the_gold_solution():
    problems = synthetic(3, steps=[1, 2, 3], seed=1)
    attempts = student_with(ReferenceEngine()).solve(problems)
    verdicts = Verifier("verifier", AgentConfig(role="verifier")).check(attempts, problems)
    assert all(v.correct for v in verdicts)
    assert [a.steps[:-1] for a in attempts] == [p.gold_steps for p in problems]


def test_verifier_grades_and_lists_mistakes():
    p = synthetic(1, steps=2, seed=0)[0]
    right = Attempt(problem_id=p.problem_id, text=f"so\n#### {p.answer}", answer=p.answer)
    wrong = Attempt(problem_id=p.problem_id, text="#### 99999", answer="99999", prefix="first\n")
    v = Verifier("verifier", AgentConfig(role="verifier"))
    one = v.check(right, p)
    assert isinstance(one, Verdict) and one.correct and one.parents == (right.id, p.id)
    verdicts = v.check([right, wrong], [p])
    assert [x.correct for x in verdicts] == [True, False]
    (mistake,) = v.mistakes([right, wrong], verdicts)
    assert mistake.attempt_id == wrong.id and mistake.gold == p.answer and mistake.text == "first\n#### 99999"
    with pytest.raises(KeyError, match="no problem"):
        v.check(Attempt(problem_id="nope", text=""), [p])


class Garbage(Engine):
    """A teacher model that answers with nothing usable (unit test of the parsing around the engine)."""

    name, model = "fake", "garbage"

    def generate(self, prompts, params):
        return [[Completion(text="   ")] for _ in prompts]


def test_unparseable_teacher_reply_is_recorded_not_raised():
    p = synthetic(1, steps=3, seed=0)[0]
    t = Teacher("t", AgentConfig(role="teacher"), engine=Garbage())
    g = t.guide(p, 2)
    assert isinstance(g, Guidance) and g.steps == () and guidance_prefix(g) == ""
    notes = [m for m in t.drain() if isinstance(m, Note)]
    assert notes and notes[0].kind == "unparsed" and notes[0].problem_id == p.problem_id


@pytest.mark.slow
def test_teacher_on_a_model_writes_steps(hf_engine):
    p = synthetic(1, steps=3, seed=2)[0]
    from conftest import Recording

    t = Teacher("small", AgentConfig(role="teacher", max_tokens=40), engine=Recording(hf_engine))
    g = t.guide(p, 1)
    side = t.drain()
    (reply,) = t.engine.replies
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip() and not ln.strip().startswith("####")]
    assert g.steps == tuple(lines[:1]) and g.text == "\n".join(lines[:1]), "the reply's first line is the step"
    assert any(isinstance(m, Note) and m.kind == "unparsed" for m in side) == (not lines)
    assert g.teacher == "small" and g.k == 1


def test_reference_engine_refuses_free_prompts():
    from schoolroom.agents.engines import Params, Prompt

    with pytest.raises(ValueError, match="first_steps, next_step, solve and tailor"):
        ReferenceEngine().generate([Prompt(messages=[], problem=synthetic(1)[0])], Params())


@pytest.mark.slow
def test_usage_bills_what_was_generated(hf_engine):
    """A greedy request for n completions generates once and is billed once; prompt tokens count once per prompt."""
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.student import Student, solve_prompt
    from schoolroom.messages import Usage

    problems = synthetic(2, steps=1, seed=3)
    student = Student("student", AgentConfig(role="student", max_tokens=12), engine=hf_engine)
    prompt_tokens = sum(len(hf_engine.tokenizer(render_prompt(hf_engine.tokenizer, solve_prompt(p)),
                                                add_special_tokens=False)["input_ids"]) for p in problems)
    greedy = student.solve(problems, n=3)
    (u,) = [m for m in student.drain() if isinstance(m, Usage)]
    assert [a.text for a in greedy[:3]] == [greedy[0].text] * 3, "three copies of one greedy answer"
    assert u.calls == 2 and u.prompt_tokens == prompt_tokens
    assert u.completion_tokens == greedy[0].tokens + greedy[3].tokens
    sampled = student.solve(problems, n=3, temperature=1.0)
    (u,) = [m for m in student.drain() if isinstance(m, Usage)]
    assert u.calls == 6 and u.prompt_tokens == prompt_tokens and u.completion_tokens == sum(a.tokens for a in sampled)


@pytest.mark.slow
def test_sampled_attempts_carry_the_ids_and_logprobs_the_trainer_recomputes(hf_engine):
    """An attempt keeps the ids it sampled (the stop token too) and their sampling log-probabilities, and the
    trainer's forward pass over exactly those ids gives the same log-probabilities."""
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.student import solve_prompt
    from schoolroom.training.rl import Rollout, encode_rollouts, forward_rows

    tok = hf_engine.tokenizer
    problems = synthetic(2, steps=1, seed=3)
    attempts = student_with(hf_engine, max_tokens=24).solve(problems, n=2, temperature=0.8)
    for a in attempts:
        assert a.tokens == len(a.token_ids) == len(a.logprobs) > 0 and all(lp <= 0 for lp in a.logprobs)
        assert tok.decode(a.token_ids, skip_special_tokens=True).startswith(a.text)
    by_id = {p.problem_id: p for p in problems}
    rows = encode_rollouts(tok, [Rollout(prompt=render_prompt(tok, solve_prompt(by_id[a.problem_id])), completion=a.text,
                                         completion_ids=list(a.token_ids), logprobs=list(a.logprobs), reward=0.0)
                                 for a in attempts], max_length=512)
    for r, (logp, _, _) in zip(rows, forward_rows(hf_engine.lm, rows, tok.pad_token_id,
                                                       {"temperature": 0.8, "batch_size": 4, "logprob_chunk": 1024})):
        assert torch.allclose(logp, torch.tensor(r.engine_logp), atol=2e-3), (logp, r.engine_logp)
    from schoolroom.agents.engines import Params, Prompt

    ask = Prompt(messages=[{"role": "user", "content": "Reply with one word: yes or no. Is 2 bigger than 1?"}])
    (short,) = hf_engine.generate([ask], Params(max_tokens=16, temperature=0.8, n=2))
    for c in short:  # stopped on the end-of-text token: it is the last id, and not in the text
        assert c.finish_reason == "stop" and c.token_ids[-1] == tok.eos_token_id and c.text.strip(), c
