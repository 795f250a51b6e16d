"""Rollout cost of the Explorer on the same wrong attempts: prefix sharing off and on, then binary vs linear search.

    python bench/explore.py [--attempts 20] [--k 4] [--steps 2 3 4] [--adapter PATH]

Samples the student (SmolLM2-135M, or with a LoRA adapter) on synthetic problems until it has
``--attempts`` wrong attempts. Then the linear search twice from the same seed: each of the k rollouts of a
prefix reading the prompt itself (what ``generate`` with ``num_return_sequences`` does), and the k rollouts as
one prompt with n = k whose prefill is shared: prompt tokens read, tokens generated, wall time, and whether
the rollouts are the same. Then both searches: generated tokens, their ratio (binary / linear), and how often
they agree on the pit.
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
from schoolroom.messages import StepRewards, Usage


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
    shared = {}
    for share in (False, True):
        engine.share_prefix = share
        explorer.drain()
        t = time.perf_counter()
        out = explorer.explore(wrong, problems, k=args.k, search="linear", temperature=args.temperature)
        dt = time.perf_counter() - t
        usage = [m for m in explorer.drain() if isinstance(m, Usage)]
        shared[share] = [m for m in out if isinstance(m, StepRewards)]
        print(f"prefix shared {'yes' if share else 'no '}: {sum(u.prompt_tokens for u in usage)} prompt tokens read, "
              f"{sum(u.completion_tokens for u in usage)} generated, {sum(u.calls for u in usage)} rollouts, {dt:.1f}s")
    same = [a.rewards == b.rewards for a, b in zip(shared[False], shared[True])]
    print(f"same step rewards with and without sharing: {sum(same)}/{len(same)}")
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
