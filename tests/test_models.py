"""The real SmolLM2-135M through the spec resolver: convert once, load from the cache, generate."""

from __future__ import annotations

import time

import pytest

from schoolroom import models
from schoolroom.agents.engines import Params, Prompt
from schoolroom.environment import extract_answer, synthetic
from schoolroom.environment.prompts import chat, render

pytestmark = pytest.mark.slow


def test_short_name_is_converted_once_then_cached(hf_engine):
    # hf_engine resolved the short name (converting it if this machine never had); now it is cached
    t = time.perf_counter()
    tok, model, src = models.load("smollm2-135m-instruct")
    assert src.cached and src.convert_s == 0.0
    assert time.perf_counter() - t < 20
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    assert (models.cache_dir() / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()
    # a local folder works as a spec too
    assert models.resolve(src.path).path == src.path


def test_bad_specs_are_clear(tmp_path):
    with pytest.raises(models.ModelNotFound, match="no config.json"):
        models.resolve(str(tmp_path))
    with pytest.raises(models.ModelNotFound, match="neither a short name"):
        models.resolve("not a model")


def test_generates_an_answer_to_a_synthetic_problem(hf_engine):
    problems = synthetic(2, steps=1, seed=3)
    prompts = [Prompt(messages=chat(render("student_solve", question=p.question))) for p in problems]
    outs = hf_engine.generate(prompts, Params(max_tokens=48))
    assert [len(o) for o in outs] == [1, 1]
    for (c,) in outs:
        assert c.text.strip() and 0 < c.completion_tokens <= 48 and c.prompt_tokens > 20
        assert extract_answer(c.text) is not None
    # batched generation equals one-by-one generation (left padding is right)
    single = hf_engine.generate(prompts[1:], Params(max_tokens=48))
    assert single[0][0].text == outs[1][0].text


def test_sampling_is_seeded_and_n_gives_n(hf_engine):
    prompt = [Prompt(messages=chat("Name a fruit."))]
    a = hf_engine.generate(prompt, Params(max_tokens=8, temperature=1.0, n=3, seed=5))
    b = hf_engine.generate(prompt, Params(max_tokens=8, temperature=1.0, n=3, seed=5))
    assert len(a[0]) == 3 and [c.text for c in a[0]] == [c.text for c in b[0]]
