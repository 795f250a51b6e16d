"""Does a PRM's loss fall on its own training data? The first and last batch against the same examples.

    python bench/reward_models_loss.py [--problems 64] [--noise 0.15] [--lr 5e-4 1e-4] [--epochs 2]

A PRM is trained the way ``experiments/reinforce_synthetic.toml`` trains its PRM (synthetic one- and two-step
problems, LoRA r=16 on q/k/v/o, batch 8, 2 epochs, linear decay), on labels that need no sampling: each problem's
gold solution (every step 1) and the same solution with its last computation off by 7 (the steps before it 1, it
and the answer 0), each label flipped with probability ``--noise`` (Monte-Carlo labels from 4 rollouts are noisy
too). For each learning rate it prints what the reinforce report used to show, the first and the last batch's loss
(different examples), beside the loss on the same 32 training examples before the first step and after the
last, and the loss of always predicting their share of positive labels (the base rate). About 2-3 minutes per
learning rate on 2 quiet CPU cores.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schoolroom import models  # noqa: E402
from schoolroom.agents.verifier import reward_input  # noqa: E402
from schoolroom.environment import synthetic  # noqa: E402
from schoolroom.messages import Attempt  # noqa: E402
from schoolroom.training.reward_model import train_reward_model  # noqa: E402


def examples(tok, n: int, noise: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for p in synthetic(n, steps=[1, 2], seed=4):
        bad = str(int(p.answer) + 7)
        wrong = p.gold_steps[:-1] + (p.gold_steps[-1].replace(f"= {p.answer}", f"= {bad}"),)
        for steps, answer, labels in ((p.gold_steps, p.answer, [1.0] * (len(p.gold_steps) + 1)),
                                      (wrong, bad, [1.0] * (len(wrong) - 1) + [0.0, 0.0])):
            steps = steps + (f"#### {answer}",)
            x = reward_input(tok, p, Attempt(problem_id=p.problem_id, text="\n".join(steps), steps=steps))
            x["labels"] = [1.0 - y if rng.random() < noise else y for y in labels]
            out.append(x)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--lr", type=float, nargs="+", default=[5e-4, 1e-4])
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tok = models.load_tokenizer("smollm2-135m-instruct")
    path = models.resolve("smollm2-135m-instruct").path
    data = examples(tok, args.problems, args.noise, args.seed)
    lora = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    print(f"{len(data)} solutions, {sum(len(x['labels']) for x in data)} step labels, noise {args.noise}")
    print("| learning rate | steps | first batch → last batch | same 32 examples: before → after | base rate "
          "| accuracy before → after | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for lr in args.lr:
        t = time.perf_counter()
        m = train_reward_model(path, data, tempfile.mkdtemp(prefix="rm-loss-"), "prm", lora=lora, seed=args.seed,
                               settings={"learning_rate": lr, "epochs": args.epochs, "batch_size": 8}, tokenizer=tok)
        print(f"| {lr:g} | {m['steps']:.0f} | {m['first_loss']:.3f} → {m['last_loss']:.3f} | {m['loss_before']:.3f} → "
              f"{m['loss_after']:.3f} | {m['loss_base_rate']:.3f} | {m['accuracy_before']:.2f} → "
              f"{m['accuracy_after']:.2f} | {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
