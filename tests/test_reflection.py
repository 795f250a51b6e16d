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


@pytest.mark.slow
def test_reflection_loss_on_the_model(hf_engine):
    from peft import get_peft_model

    from schoolroom.training.common import lora_config

    model = get_peft_model(hf_engine.base.__class__.from_pretrained(hf_engine.source.path), lora_config({}))
    tok = hf_engine.tokenizer
    batch = [{"prompt": "Q: Tom has 2 apples and buys 3. How many?\nA: ", "completion": "2 + 3 = 5\n#### 5",
              "negative": "2 * 3 = 6\n#### 6"},
             {"prompt": "Q: Mia has 4 pens and loses 1. How many?\nA: ", "completion": "4 - 1 = 3\n#### 3"}]
    total, sft, term = reflection_loss(model, tok, batch, weight=0.5, margin=1.0, max_length=128)
    assert float(term) > 0 and float(total) == pytest.approx(float(sft) + 0.5 * float(term), rel=1e-5)
    plain, sft0, term0 = reflection_loss(model, tok, batch, weight=0.0, margin=1.0, max_length=128)
    assert float(term0) == 0.0 and float(plain) == pytest.approx(float(sft), rel=1e-5), "weight 0 is plain SFT"
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora" in n)
