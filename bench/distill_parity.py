"""Schoolroom's on-policy distillation (the ``distill`` protocol's ``opd`` arm) beside TRL's ``DistillationTrainer``,
with everything that can be held fixed held fixed.

    python bench/distill_parity.py            # 8 updates of 8 problems x 4 a side, 256 held out: ~45 min, 2 cores
    python bench/distill_parity.py --teacher-adapter RUN/adapters/teacher_sft-...   # the same, 25 min (measured)
    python bench/distill_parity.py --quick    # smoke: 2 updates of 2 problems x 4, 32 tokens, 16 held out

Schoolroom's side is the ``distill`` protocol run from a config by the CLI (``schoolroom run``), one arm (``opd``),
read back from the run directory. Its run also trains the teacher: SmolLM2 with an SFT adapter on gold
solutions (``teacher_adapter = "sft"``; ``--teacher-adapter`` names one already trained instead), which TRL's side
loads merged into the base weights as its ``teacher_model``. TRL's side is ``trl.DistillationTrainer`` in this
process. Held fixed for both:

- student: SmolLM2-135M-Instruct from the base weights with a fresh LoRA (same rank, alpha, dropout, targets), fp32;
- teacher: the same SFT adapter on the same base, reading the student's prompt and its sampled tokens;
- prompts: the synthetic train problems in the protocol's order, each the student's solve prompt through the chat
  template, each n times per update; sampling at temperature 1 (the teacher's distribution is at 1), top-p 1, the
  same max completion tokens, each completion cut where the student stops (the line break after "####");
- budget: the same student rollouts (updates x batch x n) and the same optimizer steps (rollouts / batch_size,
  one pass), AdamW at a constant learning rate, no weight decay, the same gradient clipping, dropout off, seeds.

Not the same, by design of each (the point of the comparison): TRL's loss is the reverse KL over the whole
vocabulary at every position of the student's samples (``beta = 1`` of its generalized JSD), each optimizer step on
completions it has just sampled; schoolroom's is the policy gradient of the per-token advantage -(log pi_student -
log pi_teacher) at the sampled tokens only (tinker-cookbook's and slime's estimator), in GRPO's clipped objective,
one generation of batch x n rollouts per update.

Prints per side the per-update training divergence each side defines (schoolroom: the mean sampled-token
log pi_s - log pi_t before the update; TRL: its loss, the full-vocabulary reverse KL per token), seconds per update,
then one evaluation for both sides: held-out greedy accuracy (schoolroom's hf engine with each final adapter; the
base student and the teacher beside them) with paired intervals, and the reverse KL to the teacher by one estimator
for every policy (one temperature-1 sample per held-out problem, the mean over its tokens of log pi_s - log pi_t).
Writes results.json and both sides' runs under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import trl_parity as common  # noqa: E402  (the GRPO parity bench: prompts, the answer-line cut, the evaluation)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/distill_parity", help="results folder")
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes: a few minutes on quiet cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-n", type=int, default=512, help="gold solutions the teacher's SFT adapter learns")
    ap.add_argument("--teacher-seed", type=int, default=5)
    ap.add_argument("--teacher-lr", type=float, default=5e-4)
    ap.add_argument("--teacher-epochs", type=float, default=3.0)
    ap.add_argument("--teacher-adapter", default="sft",
                    help="a peft adapter folder to use as the teacher instead of training one (the teacher_sft adapter "
                         "of a distill run with these --teacher-* settings saves its 20 minutes on 2 cores)")
    ap.add_argument("--clip", type=float, default=0.2, help="schoolroom's clip epsilon (TRL's loss has none)")
    common.shared_args(ap, iterations=8, eval_n=256)
    args = ap.parse_args(argv)
    common.finish_args(ap, args, dict(iterations=2, batch=2, n=4, batch_size=4, max_tokens=32, eval_n=16, train_n=16,
                                      teacher_n=16, teacher_epochs=1.0))
    if args.teacher_adapter != "sft":
        if not (Path(args.teacher_adapter) / "adapter_config.json").exists():
            ap.error(f"--teacher-adapter {args.teacher_adapter}: not a peft adapter folder (no adapter_config.json)")
        args.teacher_adapter = str(Path(args.teacher_adapter).resolve())
    args.epochs, args.sft_n, args.start = 1, 0, "base"  # what the shared helpers read
    return args


# ----------------------------------------------------------------------------------------- schoolroom's side
def schoolroom_config(args) -> dict:
    synthetic = {"source": "synthetic", "steps": args.steps}
    return {
        "run": {"name": f"distill_parity_s{args.seed}", "seed": args.seed},
        "runtime": {"address": args.runtime},
        "data": {"teacher_train": synthetic | {"n": args.teacher_n, "seed": args.teacher_seed},
                 "train": synthetic | {"n": args.train_n, "seed": args.train_seed},
                 "eval": synthetic | {"n": 4, "seed": args.eval_seed}},  # the protocol's own eval: this script's is one for both
        "agents": {
            "student": {"role": "student", "model": args.model, "max_tokens": args.max_tokens, "threads": args.threads,
                        "batch_size": args.batch * args.n, "seed": args.seed, "resources": {"num_cpus": 0.25}},
            "teacher": {"role": "teacher", "model": args.model, "max_tokens": args.max_tokens, "threads": args.threads,
                        "batch_size": args.batch * args.n, "resources": {"num_cpus": 0.25}},
            "trainer": {"role": "trainer", "model": args.model, "threads": args.threads, "resources": {"num_cpus": 0.5}},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        "protocol": {
            "name": "distill", "seed": args.seed, "start": "base", "teacher_adapter": args.teacher_adapter,
            "teacher_sft_data": "teacher_train",
            "teacher_sft": {"learning_rate": args.teacher_lr, "epochs": args.teacher_epochs, "batch_size": 8},
            "context": "question", "train": ["train"], "iterations": args.iterations, "batch": args.batch,
            "n": args.n, "temperature": args.temperature, "max_tokens": args.max_tokens,
            "eval_every": args.iterations, "arms": ["opd"], "lora": common.lora(args),
            "opd": {"learning_rate": args.lr, "epochs": 1.0, "batch_size": args.batch_size, "clip": args.clip,
                    "kl_coef": 1.0, "task_coef": 0.0, "beta": 0.0, "max_grad_norm": args.max_grad_norm},
        },
    }


def run_schoolroom(args, folder: Path) -> dict:
    """``schoolroom run`` on the config (the GRPO bench's runner); the numbers read back from the run directory."""
    from schoolroom import Run

    run_dir, wall = common.cli_run(schoolroom_config(args), folder)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    its = sorted((h for h in metrics["curves"] if h["arm"] == "opd"), key=lambda h: h["iteration"])
    run = Run(run_dir)
    results = run.table("train_results")
    teacher = (args.teacher_adapter if args.teacher_adapter != "sft" else
               results[results["adapter"].astype(str).str.startswith("teacher_sft")].iloc[-1]["path"])
    opd = results[results["adapter"].astype(str).str.startswith("opd-")].sort_values("round")
    calls = run.table("calls")
    seconds = [float(calls[(calls["round"] == r["round"]) & (calls["time"] <= float(r["time"]) + 0.5)
                           & calls["method"].isin(["solve", "logprobs", "train"])]["seconds"].sum())
               for _, r in opd.iterrows()]
    order = common.schoolroom_order(run_dir, {p.problem_id: p for p in common.problem_sets(args)[0]})
    return {"divergence": [-h["advantage_mean"] for h in its], "seconds": seconds, "adapter": str(opd.iloc[-1]["path"]),
            "teacher_adapter": str(teacher), "run_dir": str(run_dir), "wall_s": wall, "order": order,
            "tokens": [h["student_tokens"] for h in its]}


# ------------------------------------------------------------------------------------------------ TRL's side
def trl_settings(args, out_dir: Path) -> dict:
    """Every DistillationConfig field that changes what is trained, set explicitly (TRL 1.16's default in the comment
    where it differs)."""
    return dict(
        output_dir=str(out_dir), seed=args.seed, data_seed=args.seed,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,  # TRL: bf16=True, checkpointing=True
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        max_steps=args.iterations * common.steps_per_update(args),
        shuffle_dataset=False,  # the prompts in the protocol's order, each n times
        temperature=args.temperature, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        max_completion_length=args.max_tokens, generation_kwargs=None, use_vllm=False, pad_to_multiple_of=None,
        learning_rate=args.lr,  # TRL: 1e-6
        lr_scheduler_type="constant", warmup_steps=0,  # TRL: linear
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=args.max_grad_norm,
        beta=1.0,  # reverse KL (TRL's default)
        disable_dropout=True,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, log_completions=False,
    )


def run_trl(args, updates: list[list], folder: Path, teacher_adapter: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import DistillationConfig, DistillationTrainer

    from schoolroom import models

    folder.mkdir(parents=True, exist_ok=True)
    src = models.resolve(args.model)
    tok = models.load_tokenizer(src)
    texts = [common.prompt_text(tok, p) for batch in updates for p in batch for _ in range(args.n)]
    data = Dataset.from_dict({"prompt": texts})

    class Trainer(DistillationTrainer):
        """TRL's DistillationTrainer, each sampled completion cut after the token that completes the line break
        after '####' (where the schoolroom student stops)."""

        def _generate_single_turn(self, *a, **kw):
            ids = super()._generate_single_turn(*a, **kw)
            return [c[:common.answer_line_end(tok, c, set(self.eos_token_ids))] for c in ids]

    every, clock = common.steps_per_update(args), {"update_s": []}

    class Clock(TrainerCallback):
        start = 0.0

        def on_step_begin(self, _args, state, control, **kw):
            if state.global_step % every == 0:
                self.start = time.perf_counter()

        def on_step_end(self, _args, state, control, **kw):
            if state.global_step % every == 0:
                clock["update_s"].append(time.perf_counter() - self.start)

    set_seed(args.seed)
    teacher = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32),
                                        teacher_adapter).merge_and_unload()
    student = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32)
    trainer = Trainer(model=student, teacher_model=teacher, args=DistillationConfig(**trl_settings(args, folder / "t")),
                      train_dataset=data, processing_class=tok,
                      peft_config=LoraConfig(task_type="CAUSAL_LM", **common.lora(args)), callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    adapter = folder / "adapter"
    trainer.model.save_pretrained(str(adapter), selected_adapters=["default"])
    losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    return {"divergence": [statistics.fmean(losses[i:i + every]) for i in range(0, len(losses), every)],
            "seconds": clock["update_s"], "adapter": str(adapter), "wall_s": wall}


# ------------------------------------------------------------------------------------------ one evaluation
def reverse_kl(args, problems, students: dict[str, str | None], teacher: str) -> dict[str, float]:
    """Per policy: one temperature-1 sample per problem (the student's prompt and stop rule), then the mean over
    all its tokens of log pi_student (the sampling log-probability) - log pi_teacher (the teacher's score)."""
    from schoolroom.agents.engines.factory import make_engine
    from schoolroom.api import Params, solve_prompt
    from schoolroom.config import AgentConfig

    engine = make_engine(AgentConfig(role="student", model=args.model, max_tokens=args.max_tokens, seed=args.seed,
                                     batch_size=args.eval_batch_size))
    prompts = [solve_prompt(p) for p in problems]
    out = {}
    for i, (label, path) in enumerate(students.items()):
        engine.unload_adapter() if path is None else engine.load_adapter(f"s{i}", path)
        samples = [cs[0] for cs in engine.generate(prompts, Params(max_tokens=args.max_tokens, temperature=1.0, n=1,
                                                                  stop_after=common.MARKER))]
        engine.load_adapter("teacher", teacher)
        scores = engine.score(prompts, [c.token_ids for c in samples])
        diffs = [s - t for c, lp in zip(samples, scores) for s, t in zip(c.logprobs, lp)]
        out[label] = statistics.fmean(diffs) if diffs else None
        print(f"  reverse KL to the teacher, {label}: {out[label]:.4f} per token ({len(diffs)} tokens)", flush=True)
    engine.close()
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import torch

    from schoolroom.api import paired_difference, wilson

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, heldout = common.problem_sets(args)
    pool = {p.problem_id: p for p in train}
    print(f"Distillation parity: {args.iterations} updates of {args.batch} problems x {args.n} rollouts (<= "
          f"{args.max_tokens} tokens, temperature {args.temperature}), {common.steps_per_update(args)} optimizer steps of "
          f"{args.batch_size} per update; lr {args.lr:g}; LoRA r {args.lora_r}; {os.cpu_count()} CPUs", flush=True)
    print("teacher: " + ("SFT on the gold solutions in schoolroom's run" if args.teacher_adapter == "sft"
                         else args.teacher_adapter), flush=True)
    sr = run_schoolroom(args, out / "schoolroom")
    updates = [[pool[i] for i in b] for b in sr["order"]]
    print(f"schoolroom: {sr['wall_s']:.0f} s; divergence " + " ".join(f"{x:.3f}" for x in sr["divergence"]), flush=True)
    tr = run_trl(args, updates, out / "trl", sr["teacher_adapter"])
    print(f"TRL: {tr['wall_s']:.0f} s; divergence " + " ".join(f"{x:.3f}" for x in tr["divergence"]), flush=True)
    policies = {"start (base)": None, "teacher": sr["teacher_adapter"], "schoolroom": sr["adapter"], "TRL": tr["adapter"]}
    outcomes = common.evaluate(args, heldout, policies)
    kl = reverse_kl(args, heldout, {k: v for k, v in policies.items() if k != "teacher"}, sr["teacher_adapter"])
    rows, held = [], {}
    for label, o in outcomes.items():
        p, lo, hi = wilson(sum(o), len(o))
        d = paired_difference(outcomes["start (base)"], o, seed=0) if label != "start (base)" else None
        held[label] = {"correct": sum(o), "n": len(o), "accuracy": p, "vs_start": d}
        rows.append([label, f"{p:.1%} [{lo:.1%}, {hi:.1%}] ({sum(o)}/{len(o)})",
                     f"{d[0]:+.1%} [{d[1]:+.1%}, {d[2]:+.1%}]" if d else "-",
                     f"{kl[label]:.4f}" if kl.get(label) is not None else "-"])
    print(f"\nHeld-out, {len(heldout)} problems (greedy accuracy; reverse KL to the teacher, one sample each)")
    print(common.table(["policy", "accuracy [95% Wilson]", "vs start [95% paired]", "reverse KL per token"], rows))
    d = paired_difference(outcomes["TRL"], outcomes["schoolroom"], seed=0)
    ratio = statistics.fmean(sr["seconds"]) / statistics.fmean(tr["seconds"])
    line = (f"distillation parity, {args.iterations} updates x {args.batch * args.n} rollouts: held-out accuracy "
            f"schoolroom {sum(outcomes['schoolroom'])}/{len(heldout)}, TRL {sum(outcomes['TRL'])}/{len(heldout)}, "
            f"schoolroom - TRL {d[0]:+.1%} [{d[1]:+.1%}, {d[2]:+.1%}]; reverse KL to the teacher per token "
            f"schoolroom {kl['schoolroom']:.4f}, TRL {kl['TRL']:.4f} (start {kl['start (base)']:.4f}); seconds per "
            f"update schoolroom / TRL {ratio:.2f}")
    wall = time.perf_counter() - t0
    results = {"settings": vars(args), "schoolroom_config": schoolroom_config(args),
               "trl_config": trl_settings(args, out / "trl"), "schoolroom": sr, "trl": tr, "heldout": held,
               "reverse_kl": kl, "schoolroom_minus_trl": d, "seconds_ratio": ratio, "line": line, "wall_s": wall}
    (out / "results.json").write_text(json.dumps(common.finite(results), indent=2, default=str))
    print(f"\n{out / 'results.json'}; {wall:.0f} s in all\n{line}")


if __name__ == "__main__":
    main()
