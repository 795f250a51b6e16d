"""The PRM trained on PRM800K human step labels, checked on the labels of problems held out of its training.

    python bench/prm800k_heldout.py [--heldout 0.3] [--split-seed 0] [--steps 8] [--problems-per-step 1]
                                    [--layers 8] [--learning-rate 2e-4] [--out DIR]

The human labels (``prm800k_phase1_test_stepwise_critique_derived``: 101 problems) are split by problem
(``split_by_problem``: the reward-model settings' ``human_heldout`` share and ``human_split_seed``); a PRM
(SmolLM2-135M with LoRA and a scalar head, each rated step labelled once) is trained on the rest through the
Trainer, loaded on a Verifier and scores every held-out solution; ``heldout_check`` prints its step AUC and how
well it finds the first wrong step, beside a constant score, the step's position and its length (each fitted
on the training split). Agents run in this process (no Ray): the same code the reinforce and best_of_n protocols
run on their actors.

The default size: training reads 8 of the 71 training problems once (8 steps of 1; 278 s on 2 quiet cores, about
12 GiB: 12 steps of 2 problems with 16 packed sequences per forward pass ran out of 24 GiB), each rated step once and the steps a problem's solutions share computed once,
with LoRA only on the last ``--layers`` layers (the backward pass stops there); scoring the 30 held-out problems
reads their about 48,000 distinct tokens once. The learning rate is below the reward models' usual 5e-4: one
Adam step at 5e-4 raised an ORM's loss on its own training batch (the head reads hidden states whose shared
component is about 3.7 times their spread, and Adam's first steps move every head weight by the learning rate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schoolroom.agents.trainer import Trainer  # noqa: E402
from schoolroom.agents.verifier import Verifier  # noqa: E402
from schoolroom.config import AgentConfig  # noqa: E402
from schoolroom.messages import TrainRequest  # noqa: E402
from schoolroom.protocols.reward_models import RewardModelSettings, heldout_check, human_split  # noqa: E402
from schoolroom.reporting.report import table_markdown  # noqa: E402


def main() -> None:
    defaults = RewardModelSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", type=float, default=defaults.human_heldout, help="share of problems held out")
    ap.add_argument("--split-seed", type=int, default=defaults.human_split_seed)
    ap.add_argument("--steps", type=int, default=8, help="training steps")
    ap.add_argument("--problems-per-step", type=int, default=1, help="problems per training batch")
    ap.add_argument("--layers", type=int, default=8, help="LoRA on the last N of the 30 layers (0: all)")
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--loss-check", type=int, default=4, help="training problems the loss is measured on before/after")
    ap.add_argument("--forward-batch", type=int, default=2,
                    help="packed sequences per forward pass in training (16 ran out of 24 GiB at 2 problems a step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", default=None, help="folder for the adapter and metrics.json (default: a temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    t0 = time.perf_counter()
    cfg = RewardModelSettings(human_heldout=args.heldout, human_split_seed=args.split_seed)
    train, held = human_split(cfg)
    print(f"PRM800K split (seed {args.split_seed}): {len({p.problem_id for p, _, _ in train})} training problems "
          f"({len(train)} solutions), {len({p.problem_id for p, _, _ in held})} held out ({len(held)} solutions)",
          flush=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="prm800k-heldout-"))
    agent = {"threads": args.threads, "max_model_len": 2048}
    trainer = Trainer("trainer", AgentConfig(role="trainer", **agent), workdir=str(out))
    lora = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    if args.layers:
        lora["layers_to_transform"] = list(range(30 - args.layers, 30))
    data = [m for _, a, r in train for m in (a, r)]
    problems = list({p.problem_id: p for p, _, _ in train + held}.values())
    request = TrainRequest(kind="prm", name="prm_prm800k", data=tuple(m.id for m in data), lora=lora, seed=args.seed,
                           base_model="smollm2-135m-instruct",
                           hyper={"batch_by": "problem", "batch_size": args.problems_per_step, "max_steps": args.steps,
                                  "learning_rate": args.learning_rate, "max_length": 2048, "loss_check": args.loss_check,
                                  "forward_batch": args.forward_batch})
    t = time.perf_counter()
    result = trainer.train(request, data, problems)
    trained = time.perf_counter() - t
    m = result.metrics
    print(f"trained in {trained:.0f} s: {m['steps']:.0f} steps, {m['examples']:.0f} solutions, {m['labels']:.0f} "
          f"labels ({m['positive_share']:.2f} positive); loss on {m['loss_check_labels']:.0f} labels of "
          f"{m['loss_check_examples']:.0f} of its training solutions: {m['loss_before']:.3f} before, "
          f"{m['loss_after']:.3f} after (always predicting their mean label: {m['loss_base_rate']:.3f})", flush=True)

    verifier = Verifier("prm", AgentConfig(role="verifier", **agent))
    verifier.load(result)
    t = time.perf_counter()
    scores = verifier.score([a for _, a, _ in held], problems)
    scored = time.perf_counter() - t
    print(f"scored {len(held)} held-out solutions in {scored:.0f} s", flush=True)
    table, metrics = heldout_check(train, held, [r.rewards for r in scores], resamples=args.resamples, seed=args.seed)
    print()
    print(f"## {table.title}\n\n{table.note}\n")
    print("\n".join(table_markdown(table.columns, table.rows)))
    total = time.perf_counter() - t0
    print(f"\nwall time {total:.0f} s (training {trained:.0f} s, scoring {scored:.0f} s)")
    (out / "metrics.json").write_text(json.dumps({"heldout": metrics, "train": m, "seconds": {
        "total": total, "training": trained, "scoring": scored}, "args": vars(args)}, indent=1))
    print(f"adapter and metrics.json in {out}")


if __name__ == "__main__":
    main()
