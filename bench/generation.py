"""Throughput of the hf engine: batch 1 vs batch 16 on the same prompts.

    python bench/generation.py [--prompts 16] [--max-tokens 64]

Prints generated tokens per second for each batch size and their ratio (batch 16 / batch 1).
"""

from __future__ import annotations

import argparse
import time

from schoolroom.agents.engines import Params, Prompt
from schoolroom.agents.engines.hf import HFEngine
from schoolroom.environment import synthetic
from schoolroom.environment.prompts import chat, render


def throughput(engine: HFEngine, prompts: list[Prompt], batch: int, max_tokens: int) -> tuple[float, int, float]:
    engine.batch_size = batch
    t = time.perf_counter()
    outs = engine.generate(prompts, Params(max_tokens=max_tokens))
    dt = time.perf_counter() - t
    tokens = sum(c.completion_tokens for o in outs for c in o)
    return tokens / dt, tokens, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    engine = HFEngine(args.model)
    prompts = [Prompt(messages=chat(render("student_solve", question=p.question)))
               for p in synthetic(args.prompts, steps=[2, 3], seed=0)]
    engine.generate(prompts[:2], Params(max_tokens=4))  # warm up
    rows = {b: throughput(engine, prompts, b, args.max_tokens) for b in (1, 16)}
    for b, (tps, tokens, dt) in rows.items():
        print(f"batch {b:>2}: {tokens} tokens in {dt:.1f}s = {tps:.1f} tokens/s")
    print(f"ratio batch 16 / batch 1: {rows[16][0] / rows[1][0]:.2f}x")


if __name__ == "__main__":
    main()
