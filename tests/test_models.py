"""The real SmolLM2-135M through the spec resolver: convert once, load from the cache, generate."""

from __future__ import annotations

import time

import pytest

from schoolroom import models
from schoolroom.agents.engines import Params, Prompt
from schoolroom.agents.engines.base import cut_at_stop
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


def test_sampling_is_seeded_and_n_gives_n(hf_engine):
    prompt = [Prompt(messages=chat("Name a fruit."))]
    a = hf_engine.generate(prompt, Params(max_tokens=8, temperature=1.0, n=3, seed=5))
    b = hf_engine.generate(prompt, Params(max_tokens=8, temperature=1.0, n=3, seed=5))
    assert len(a[0]) == 3 and [c.text for c in a[0]] == [c.text for c in b[0]]


def _plain_generate(engine, prompt: Prompt, max_tokens: int) -> str:
    """transformers' own greedy ``generate`` on one prompt (no padding, no batching of ours)."""
    import torch

    enc = engine.tokenizer([engine.render(prompt)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = engine.lm.generate(**enc, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=engine.tokenizer.pad_token_id)
    return engine.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_the_batching_loop_says_what_plain_generate_says(hf_engine):
    """Greedy: the continuous batch (3 prompts of different lengths through 2 rows, so a row leaves at its "####"
    line and the third prompt joins mid-way) gives generate's own text, cut at the same line."""
    problems = synthetic(3, steps=[1, 2], seed=11)
    prompts = [Prompt(messages=chat(render("student_solve", question=p.question))) for p in problems]
    params = Params(max_tokens=40, stop_after="####")
    old, hf_engine.batch_size = hf_engine.batch_size, 2
    try:
        outs = hf_engine.generate(prompts, params)
    finally:
        hf_engine.batch_size = old
    plain = [cut_at_stop(_plain_generate(hf_engine, p, 40), params)[0] for p in prompts]
    assert [o[0].text for o in outs] == plain
    assert [o[0].finish_reason for o in outs] == ["stop", "length", "stop"]
    assert outs[0][0].completion_tokens < 40 == outs[1][0].completion_tokens


def test_samples_share_their_prompt_and_do_not_depend_on_the_batch(hf_engine):
    """n samples read the prompt once (the cache copied) and say what n separate reads say; a sampled row says the
    same alone and beside another prompt."""
    fruit, color = Prompt(messages=chat("Name a fruit.")), Prompt(messages=chat("Name a color."))
    params = Params(max_tokens=8, temperature=1.0, n=3, seed=5)
    shared = hf_engine.generate([fruit, color], params)
    hf_engine.share_prefix = False
    try:
        apart = hf_engine.generate([fruit], params)
    finally:
        hf_engine.share_prefix = True
    assert [c.text for c in shared[0]] == [c.text for c in apart[0]]
    assert len({c.text for c in shared[0]}) > 1  # three draws, not one copied
    assert shared[0][0].prompt_tokens > 0 and shared[0][1].prompt_tokens == 0
