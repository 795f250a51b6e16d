"""Generation speed against the machine's roofline: the hf engine at batch 1, 16 and 64, and vLLM where installed.

    python bench/generation.py [--prompts 64] [--single 8] [--max-tokens 96] [--dtype float32] [--no-vllm]

First a plain matmul measured right here (fp32 and bf16 GFLOP/s, best of a few 2048^3 products) and what it
allows for the model: tok/s = GFLOP/s / (2 x the parameters every generated token multiplies, the tied
embedding counted once as the output layer). Then real tok/s of each engine (completion tokens, no padding,
per wall second) on the student's real request (``stop_after = "####"``, greedy) over synthetic problems,
each as a percentage of the roofline of the dtype it ran in, and batched / single. Batch 1 runs on the first
``--single`` prompts (it is slow); batches on all ``--prompts``.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from schoolroom.agents.engines import Params, Prompt
from schoolroom.agents.engines.hf import HFEngine
from schoolroom.environment import synthetic
from schoolroom.environment.prompts import chat, render


def gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a ``size``-cube matmul in ``dtype`` on this machine's torch threads."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flops_per_token(lm) -> int:
    """2 x the weights a generated token goes through: every matrix once (a tied embedding is the output layer)."""
    seen, n = set(), 0
    for p in lm.parameters():
        if p.dim() == 2 and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return 2 * n


def run(engine, prompts: list[Prompt], params: Params) -> tuple[int, float]:
    t = time.perf_counter()
    outs = engine.generate(prompts, params)
    return sum(c.completion_tokens for o in outs for c in o), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--single", type=int, default=8, help="prompts for batch 1")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--dtype", default="float32", help="the hf engine's dtype (float32, bfloat16)")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 16, 64])
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()
    import torch

    console = Console()
    roof = {"float32": gflops(torch.float32), "bfloat16": gflops(torch.bfloat16)}
    engine = HFEngine(args.model, dtype=args.dtype)
    per_token = flops_per_token(engine.lm)
    tok_roof = {d: g * 1e9 / per_token for d, g in roof.items()}
    console.print(f"{torch.get_num_threads()} torch threads; {per_token / 1e6:.0f} MFLOP per generated token")
    for d in roof:
        console.print(f"matmul roofline {d}: {roof[d]:.0f} GFLOP/s = {tok_roof[d]:.0f} tok/s for the model")

    prompts = [Prompt(messages=chat(render("student_solve", question=p.question)))
               for p in synthetic(args.prompts, steps=[2, 3], seed=0)]
    params = Params(max_tokens=args.max_tokens, stop_after="####")
    engine.generate(prompts[:2], Params(max_tokens=4))  # warm up
    rows = []
    for b in args.batches:
        engine.batch_size = b
        these = prompts[:args.single] if b == 1 else prompts
        tokens, dt = run(engine, these, params)
        rows.append((f"hf {args.dtype}", b, len(these), tokens, dt, tokens / dt / tok_roof[args.dtype]))
    del engine
    if not args.no_vllm:
        try:
            from schoolroom.agents.engines.vllm import VLLMEngine

            t = time.perf_counter()
            v = VLLMEngine(args.model)
            console.print(f"vllm engine started in {time.perf_counter() - t:.0f} s")
            v.generate(prompts[:2], Params(max_tokens=4))
            tokens, dt = run(v, prompts, params)
            rows.append(("vllm bfloat16", len(prompts), len(prompts), tokens, dt, tokens / dt / tok_roof["bfloat16"]))
            v.close()
        except ImportError as e:
            console.print(f"vllm not installed: {e}")

    table = Table(title=f"real tok/s, {args.max_tokens} new tokens at most, greedy")
    for col in ("engine", "batch", "prompts", "tokens", "seconds", "tok/s", "% of roofline"):
        table.add_column(col, justify="right")
    for name, b, n, tokens, dt, frac in rows:
        table.add_row(name, str(b), str(n), str(tokens), f"{dt:.1f}", f"{tokens / dt:.1f}", f"{100 * frac:.0f}%")
    console.print(table)
    single = next((r for r in rows if r[1] == 1), None)
    for r in rows:
        if single and r is not single:
            console.print(f"{r[0]} batch {r[1]} / hf batch 1: {r[3] / r[4] / (single[3] / single[4]):.1f}x")
    if not rows:
        return
    best = max(rows, key=lambda r: r[3] / r[4])
    console.print(f"best: {best[0]} at batch {best[1]}, {best[3] / best[4]:.0f} tok/s = {100 * best[5]:.0f}% of its roofline")


if __name__ == "__main__":
    main()
