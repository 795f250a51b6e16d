"""What makes training fast and fit a GPU, checked against the plain computation it replaces: the precision picked
(bf16 where native, float32 otherwise), greedy text that does not depend on the batch, micro-batches with gradient
accumulation, chunked log-probabilities, and an agent's ``dtype`` reaching the training."""

from __future__ import annotations

import pytest
import torch

from schoolroom.agents.engines import Params, Prompt
from schoolroom.environment import synthetic
from schoolroom.environment.prompts import chat, render
from schoolroom.training import precision


def test_bf16_falls_back_to_float32_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    auto, asked = precision.resolve("auto", "cpu"), precision.resolve("bfloat16", "cpu")
    assert auto.compute == auto.weights == asked.compute == "float32" and not auto.low
    assert "no native bf16" in auto.why and "no native bf16" in asked.why
    assert isinstance(auto.autocast(), type(precision.resolve("float32").autocast()))  # no autocast
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    auto = precision.resolve("auto", "cpu")
    assert (auto.compute, auto.weights) == ("bfloat16", "float32") and auto.metrics() == {"bf16": 1.0}
    with auto.autocast():  # float32 weights, bf16 matmuls
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert precision.resolve("float32", "cpu").compute == "float32"
    with pytest.raises(ValueError, match="dtype 'half'"):
        precision.resolve("half")


def test_the_cpu_flags_decide_native_bf16(monkeypatch, tmp_path):
    """The real /proc/cpuinfo check: the flags avx512_bf16 or amx_bf16 and nothing else."""
    import builtins

    real_open = builtins.open
    for flags, native in (("fpu avx2 avx512f", False), ("fpu avx2 avx512_bf16", True), ("amx_bf16 sse", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor : 0\nflags : {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
        assert precision.cpu_has_bf16() is native
        monkeypatch.setattr(builtins, "open", real_open)


@pytest.mark.slow
def test_greedy_text_is_the_same_at_batch_1_and_16(hf_engine):
    """The dtype the hf engine picks for greedy calls (``auto``: float32) gives each prompt the same text whatever
    else is in its batch."""
    from schoolroom.agents.engines.hf import HFEngine

    import inspect

    assert inspect.signature(HFEngine).parameters["dtype"].default == "auto" and hf_engine.dtype == "float32"
    prompts = [Prompt(messages=chat(render("student_solve", question=p.question)))
               for p in synthetic(16, steps=[1, 2, 3], seed=21)]
    params = Params(max_tokens=12)
    old = hf_engine.batch_size
    try:
        texts = {}
        for b in (1, 16):
            hf_engine.batch_size = b
            texts[b] = [o[0].text for o in hf_engine.generate(prompts, params)]
    finally:
        hf_engine.batch_size = old
    assert texts[1] == texts[16]


def test_chunked_logprobs_equal_the_full_log_softmax():
    from schoolroom.training.rl import chosen_logprobs

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(13, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (13,), generator=g)
    full = torch.log_softmax(head(hidden) / 0.7, -1)
    want_logp = full.gather(1, targets[:, None]).squeeze(1)
    want_ent = -(full.exp() * full).sum(-1)
    (want_grad,) = torch.autograd.grad(want_logp.sum(), hidden)
    for chunk in (1, 4, 13, 100):
        logp, ent = chosen_logprobs(head, hidden, targets, 0.7, chunk, entropy=True)
        torch.testing.assert_close(logp, want_logp)
        torch.testing.assert_close(ent, want_ent)
        (grad,) = torch.autograd.grad(logp.sum(), hidden)  # several chunks: recomputed in the backward pass
        torch.testing.assert_close(grad, want_grad)


def _rollouts(tok, n: int = 6):
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.student import solve_prompt
    from schoolroom.training.rl import Rollout

    out = []
    for i, p in enumerate(synthetic(n, steps=[1, 2, 3], seed=5)):
        completion = " ".join(p.gold_steps[: 1 + i % 3]) + f"\n#### {p.answer}"
        out.append(Rollout(prompt=render_prompt(tok, solve_prompt(p)), completion=completion, reward=float(i % 2),
                           group=p.problem_id))
    return out


@pytest.mark.slow
def test_a_ppo_update_in_micro_batches_has_the_gradient_of_one_batch():
    """The PPO loss of 6 rollouts of different lengths: one pass, then micro-batches of two
    (each weighted by its share of the batch's tokens) give the same gradient."""
    from schoolroom import models
    from schoolroom.training.common import accumulate, micro_batches
    from schoolroom.training.ppo import before_update, ppo_step, value_head
    from schoolroom.training.rl import acting, prepare
    from schoolroom.training.settings import PPOConfig

    tok = models.load_tokenizer("smollm2-135m-instruct")
    path = models.resolve("smollm2-135m-instruct").path
    h, rows, policy, prec = prepare(path, _rollouts(tok), PPOConfig, {}, 0, "cpu", None, {"init_lora_weights": False},
                                    tok, "float32")
    rows = acting(rows)
    head = value_head(policy, None)
    torch.nn.init.normal_(head.weight, std=0.01)
    before_update(policy, head, rows, h, tok.pad_token_id, prec, None, None)
    step, params = ppo_step(policy, head, h, tok.pad_token_id), [p for p in policy.parameters() if p.requires_grad]
    params.append(head.weight)
    grads, losses = {}, {}
    pair = 2 * max(len(r.ids) for r in rows)  # two rows per micro-batch
    for budget in (0, pair):
        micro = micro_batches(rows, lambda r: len(r.ids), budget)
        assert [len(m) for m in micro] == ([6] if budget == 0 else [2, 2, 2])
        for p in params:
            p.grad = None
        losses[budget], _ = accumulate(rows, step, h | {"micro_tokens": budget}, size=lambda r: len(r.ids),
                                       weight=lambda r: r.actions)
        grads[budget] = torch.cat([p.grad.flatten() for p in params])
    assert grads[0].abs().sum() > 0
    assert losses[pair] == pytest.approx(losses[0], rel=1e-4, abs=1e-6)
    torch.testing.assert_close(grads[pair], grads[0], rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_the_dtype_in_an_agent_config_reaches_the_training(monkeypatch, tmp_path):
    """A Trainer whose config says ``dtype = "bfloat16"`` trains with that asked (resolved on this machine: bf16
    autocast where the CPU has it, else float32), and says which in its metrics."""
    from schoolroom.agents.trainer import Trainer
    from schoolroom.config import AgentConfig
    from schoolroom.messages import Attempt, StepRewards, TrainRequest

    asked = []
    real = precision.resolve
    monkeypatch.setattr(precision, "resolve", lambda dtype="auto", device="cpu": asked.append(dtype) or real(dtype, device))
    import schoolroom.training.common as common

    monkeypatch.setattr(common, "resolve", precision.resolve)
    trainer = Trainer("trainer", AgentConfig(role="trainer", dtype="bfloat16"), workdir=str(tmp_path))
    problems = synthetic(2, steps=1, seed=3)
    attempts = [Attempt(problem_id=p.problem_id, text=f"{p.gold_steps[0]}\n#### {p.answer}", steps=(p.gold_steps[0],),
                        answer=p.answer) for p in problems for _ in range(2)]
    rewards = [StepRewards(attempt_id=a.id, problem_id=a.problem_id, rewards=(), score=float(i % 2), source="answer")
               for i, a in enumerate(attempts)]
    request = TrainRequest(kind="grpo", data=tuple(m.id for m in attempts + rewards), hyper={"max_steps": 1,
                                                                                          "batch_size": 4})
    result = trainer.train(request, attempts + rewards, problems)
    assert asked == ["bfloat16"], asked
    assert result.metrics["bf16"] == float(precision.cpu_has_bf16())
    assert result.metrics["model_flops"] > 0 and result.metrics["trained_tokens"] > 0


def test_the_gqa_attention_gives_sdpa_s_outputs_bit_for_bit(hf_engine):
    """Every model loads with ``models.attention()``: SDPA reading grouped-query keys and values without a repeated
    copy. On a left- and a right-padded batch it gives transformers' own SDPA's logits at every real position."""
    from schoolroom import models

    lm = hf_engine.lm
    assert lm.config._attn_implementation == models.ATTENTION
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40000, (3, 24), generator=g)
    left, right = torch.ones(3, 24, dtype=torch.long), torch.ones(3, 24, dtype=torch.long)
    left[0, :9], left[1, :2], right[0, 15:], right[1, 20:] = 0, 0, 0, 0
    try:
        for mask in (left, right):
            out = {}
            for impl in ("sdpa", models.ATTENTION):
                lm.set_attn_implementation(impl)
                with torch.no_grad():
                    out[impl] = lm(input_ids=ids, attention_mask=mask).logits
            real = mask.bool()
            assert torch.equal(out["sdpa"][real], out[models.ATTENTION][real])
    finally:
        lm.set_attn_implementation(models.ATTENTION)


def test_the_report_says_what_precision_the_trainings_ran_in():
    from schoolroom.messages import TrainResult
    from schoolroom.reporting.sections import precision_line

    results = [TrainResult(request_id=f"r{i}", adapter=f"a{i}", path="", metrics={"bf16": float(i == 0)})
               for i in range(3)]
    assert "bf16 autocast in 1 of 3 trainings, float32 in 2" in precision_line(results)
    assert precision_line([TrainResult(request_id="r", adapter="a", path="", metrics={})]) == ""


def _shared_rollouts(tok, problems: int = 2, n: int = 3):
    """``n`` rollouts of each of ``problems`` prompts, completions of different lengths."""
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.student import solve_prompt
    from schoolroom.training.rl import Rollout

    return [Rollout(prompt=render_prompt(tok, solve_prompt(p)), reward=float(j % 2), group=p.problem_id,
                    completion=" ".join(p.gold_steps[: 1 + j]) + f"\n#### {p.answer}")
            for p in synthetic(problems, steps=[3], seed=9) for j in range(n)]


@pytest.mark.slow
def test_rollouts_of_one_prompt_read_it_once_with_the_numbers_of_reading_each_whole():
    """Two prompts' three rollouts each: one sequence per prompt (the prompt, then every completion under a tree
    mask) gives each rollout's log-probs, entropy and gradient as padding every rollout whole does."""
    from schoolroom import models
    from schoolroom.training.rl import acting, action_forward, packed_batch, prepare, read_tokens
    from schoolroom.training.settings import GRPOConfig

    tok = models.load_tokenizer("smollm2-135m-instruct")
    path = models.resolve("smollm2-135m-instruct").path
    h, rows, policy, _ = prepare(path, _shared_rollouts(tok), GRPOConfig, {}, 0, "cpu", None,
                                 {"init_lora_weights": False}, tok, "float32")
    rows = acting(rows)
    ids, _, _, _ = packed_batch(rows, tok.pad_token_id)
    assert ids.shape[0] == 2 and read_tokens(rows) == rows[0].start + rows[3].start + sum(
        len(r.ids) - r.start for r in rows) < read_tokens(rows, share=False)
    params = [p for p in policy.parameters() if p.requires_grad]
    out, grads = {}, {}
    for share in (False, True):
        logp, ent, hid, mask = action_forward(policy, rows, tok.pad_token_id, 0.8, entropy=True, share=share)
        out[share] = (logp, ent, hid, mask)
        grads[share] = torch.cat([g.flatten() for g in torch.autograd.grad((logp * mask).sum(), params)])
    for whole, shared in zip(out[False], out[True]):
        torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-4)
    assert grads[False].abs().sum() > 0  # float32 sums in another order: equal to about 1e-6 of the gradient's norm
    assert float((grads[True] - grads[False]).norm() / grads[False].norm()) < 1e-4


@pytest.mark.slow
def test_group_minibatches_hold_whole_groups_and_count_the_tokens_they_read(tmp_path):
    """``minibatches = "groups"``: every minibatch is whole groups, batch_size rollouts' worth; a GRPO step on it
    reports the tokens it read (each prompt once)."""
    from schoolroom import models
    from schoolroom.training.common import fit
    from schoolroom.training.grpo import train_grpo
    from schoolroom.training.rl import encode_rollouts, minibatching, read_tokens
    from schoolroom.training.settings import GRPOConfig

    tok = models.load_tokenizer("smollm2-135m-instruct")
    rollouts = _shared_rollouts(tok, problems=4, n=3)
    rows = encode_rollouts(tok, rollouts, 1024)
    h = GRPOConfig.of({"batch_size": 6, "minibatches": "groups", "max_steps": 4})
    seen = []
    model = torch.nn.Linear(1, 1)
    updates = minibatching(rows, h, lambda batch: seen.append(batch) or ((model.weight * 0).sum(), {}))
    fit(model, seed=0, **updates)
    assert len(seen) == 4 and all(len(b) == 6 and len({r.group for r in b}) == 2 for b in seen)
    assert all(sum(r.group == b[0].group for r in b) == 3 for b in seen)
    path = models.resolve("smollm2-135m-instruct").path
    metrics = train_grpo(path, rollouts[:6], str(tmp_path), settings={"batch_size": 6, "minibatches": "groups",
                                                                       "max_steps": 1}, tokenizer=tok, dtype="float32")
    assert metrics["trained_tokens"] == read_tokens(rows[:6])
