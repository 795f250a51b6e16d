"""First-pit search cost: binary vs linear on the same wrong attempts.

    python bench/explore.py [--attempts 20] [--k 4] [--steps 2 3 4] [--adapter PATH]

Samples the student (SmolLM2-135M, or with a LoRA adapter) on synthetic problems until it has
``--attempts`` wrong attempts, explores each with both searches from the same seed, and prints the
generated tokens of each search, their ratio (binary / linear), and how often they agree on the pit.
"""

from __future__ import annotations

import argparse
import time

from schoolroom.agents.engines.hf import HFEngine
from schoolroom.agents.explorer import Explorer
from schoolroom.agents.student import Student
from schoolroom.agents.verifier import Verifier
from schoolroom.config import AgentConfig
from schoolroom.environment import synthetic
from schoolroom.messages import StepRewards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attempts", type=int, default=20)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--adapter", help="a LoRA adapter folder for the student and the completer")
    args = ap.parse_args()

    engine = HFEngine()
    if args.adapter:
        engine.load_adapter("bench", args.adapter)
    student = Student("student", AgentConfig(role="student", max_tokens=96), engine=engine)
    explorer = Explorer("explorer", AgentConfig(role="explorer", max_tokens=80, seed=0), engine=engine)
    verifier = Verifier("verifier", AgentConfig(role="verifier"))
    wrong, problems, seed = [], [], 0
    while len(wrong) < args.attempts:
        batch = synthetic(32, steps=args.steps, seed=1000 + seed)
        attempts = student.solve(batch)
        verdicts = verifier.check(attempts, batch)
        wrong += [a for a, v in zip(attempts, verdicts) if not v.correct and len(a.steps) > 1]
        problems += batch
        seed += 1
    wrong = wrong[: args.attempts]
    found = {}
    for search in ("linear", "binary"):
        t = time.perf_counter()
        out = [m for m in explorer.explore(wrong, problems, k=args.k, search=search, temperature=args.temperature)
               if isinstance(m, StepRewards)]
        found[search] = (out, time.perf_counter() - t)
    (lin, lt), (bin_, bt) = found["linear"], found["binary"]
    tl, tb = sum(r.tokens for r in lin), sum(r.tokens for r in bin_)
    agree = sum(a.first_pit == b.first_pit for a, b in zip(lin, bin_))
    steps = sum(len(a.steps) for a in wrong) / len(wrong)
    print(f"{len(wrong)} wrong attempts, {steps:.1f} steps on average, k = {args.k}")
    print(f"linear: {tl} generated tokens, {sum(r.rollouts for r in lin)} rollouts, {lt:.0f}s")
    print(f"binary: {tb} generated tokens, {sum(r.rollouts for r in bin_)} rollouts, {bt:.0f}s")
    print(f"ratio binary / linear tokens: {tb / max(1, tl):.2f}")
    print(f"same first pit: {agree}/{len(wrong)}  (linear pits {[r.first_pit for r in lin]}, "
          f"binary pits {[r.first_pit for r in bin_]})")


if __name__ == "__main__":
    main()
