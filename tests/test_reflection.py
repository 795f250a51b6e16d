"""The self-reflection term: its value and the sign of its gradient on tiny hand-made batches, then on the model."""

from __future__ import annotations

import pytest
import torch

from schoolroom.training.reflection import cosine_distance, reflection_loss, reflection_term


def test_term_is_zero_when_the_correct_rationale_is_already_closer_by_the_margin():
    a = torch.tensor([[1.0, 0.0]])
    assert float(reflection_term(a, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), margin=0.2)) == 0.0


def test_term_value_when_the_wrong_solution_is_closer():
    a, p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # d(a, p) = 1, d(a, n) = 0: 1 - 0 + 0.2
    assert float(reflection_term(a, p, n, margin=0.2)) == pytest.approx(1.2)
    batch = reflection_term(torch.cat([a, a]), torch.cat([p, a]), torch.cat([n, p]), margin=0.2)
    assert float(batch) == pytest.approx((1.2 + 0.0) / 2), "the mean over the batch"


def test_gradient_pulls_toward_the_correct_rationale_and_pushes_from_the_wrong_one():
    a = torch.tensor([[1.0, 0.2]], requires_grad=True)
    p = torch.tensor([[0.3, 1.0]], requires_grad=True)
    n = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = reflection_term(a, p, n, margin=0.5)
    assert float(loss) > 0
    loss.backward()
    step = 0.1
    with torch.no_grad():
        a2, p2, n2 = a - step * a.grad, p - step * p.grad, n - step * n.grad
        assert float(cosine_distance(a2, p2)) < float(cosine_distance(a, p)), "q and r+ come closer"
        assert float(cosine_distance(a2, n2)) > float(cosine_distance(a, n)), "q and r- move apart"
        assert float(reflection_term(a2, p2, n2, 0.5)) < float(loss)
    # the positive's gradient points away from the anchor direction (descent moves it toward the anchor)
    assert float((p.grad * a.detach()).sum()) < 0


def _states(model, tok, prompt: str, text: str):
    """The last layer's states over ``text`` read after ``prompt``, one unpadded sequence at a time (the test's
    own encoding, independent of the batching under test)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(text + tok.eos_token, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        h = model(input_ids=torch.tensor([p + c]), output_hidden_states=True).hidden_states[-1][0]
    return h[: len(p)], h[len(p):]


def _expected(anchor, positive, negative, margin):
    cos = torch.nn.functional.cosine_similarity
    return max(0.0, float(cos(anchor, negative, dim=0) - cos(anchor, positive, dim=0)) + margin)


Q1, Q2 = "Q: Tom has 2 apples and buys 3. How many?\nA: ", "Q: Mia has 4 pens and loses 1. How many?\nA: "
GOOD, OTHER, BAD = "2 + 3 = 5\n#### 5", "Tom ends with 5 apples.\n#### 5", "2 * 3 = 6\n#### 6"


@pytest.fixture(scope="module")
def lora_model(hf_engine):
    from peft import get_peft_model

    from schoolroom.training.common import lora_config

    return get_peft_model(hf_engine.base.__class__.from_pretrained(hf_engine.source.path), lora_config({}))


@pytest.mark.slow
def test_authors_form_anchors_on_the_rationale_against_another_correct_one(hf_engine, lora_model):
    """The default (Learn-to-Reason's compute_cl_loss): anchor = the rationale trained on, positive = a different
    correct rationale, negative = the wrong solution, each read after the question, at its EOS token; a row with no
    second correct rationale has no term. Checked against the states computed one sequence at a time."""
    tok, model = hf_engine.tokenizer, lora_model.eval()
    batch = [{"prompt": Q1, "completion": GOOD, "negative": BAD, "positive": OTHER},
             {"prompt": Q2, "completion": "4 - 1 = 3\n#### 3", "negative": "4 + 1 = 5\n#### 5", "positive": ""}]
    _, term = reflection_loss(model, tok, batch, weight=0.5, margin=1.0, max_length=128)[1:]
    (_, a), (_, p), (_, n) = (_states(model, tok, Q1, t) for t in (GOOD, OTHER, BAD))
    assert float(term) == pytest.approx(_expected(a[-1], p[-1], n[-1], 1.0), abs=1e-4)
    mean = reflection_loss(model, tok, batch, weight=0.5, margin=1.0, max_length=128, pool="mean")[2]
    assert float(mean) == pytest.approx(_expected(a.mean(0), p.mean(0), n.mean(0), 1.0), abs=1e-4)


@pytest.mark.slow
def test_question_anchor_is_kept_as_a_setting(hf_engine, lora_model):
    """anchor = "question" (our earlier form): anchor = the question's states, positive = the rationale."""
    tok, model = hf_engine.tokenizer, lora_model.eval()
    batch = [{"prompt": Q1, "completion": GOOD, "negative": BAD}]
    assert float(reflection_loss(model, tok, batch, 0.5, 1.0, 128)[2]) == 0.0, "no positive: no term by default"
    term = reflection_loss(model, tok, batch, 0.5, 0.2, 128, anchor="question", pool="mean")[2]
    q, g = _states(model, tok, Q1, GOOD)
    _, n = _states(model, tok, Q1, BAD)
    assert float(term) == pytest.approx(_expected(q.mean(0), g.mean(0), n.mean(0), 0.2), abs=1e-4)


@pytest.mark.slow
def test_reflection_loss_on_the_model(hf_engine):
    from peft import get_peft_model

    from schoolroom.training.common import lora_config

    model = get_peft_model(hf_engine.base.__class__.from_pretrained(hf_engine.source.path), lora_config({}))
    tok = hf_engine.tokenizer
    batch = [{"prompt": "Q: Tom has 2 apples and buys 3. How many?\nA: ", "completion": "2 + 3 = 5\n#### 5",
              "negative": "2 * 3 = 6\n#### 6", "positive": "Tom ends with 5 apples.\n#### 5"},
             {"prompt": "Q: Mia has 4 pens and loses 1. How many?\nA: ", "completion": "4 - 1 = 3\n#### 3"}]
    total, sft, term = reflection_loss(model, tok, batch, weight=0.5, margin=1.0, max_length=128)
    assert float(term) > 0 and float(total) == pytest.approx(float(sft) + 0.5 * float(term), rel=1e-5)
    plain, sft0, term0 = reflection_loss(model, tok, batch, weight=0.0, margin=1.0, max_length=128)
    assert float(term0) == 0.0 and float(plain) == pytest.approx(float(sft), rel=1e-5), "weight 0 is plain SFT"
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora" in n)
