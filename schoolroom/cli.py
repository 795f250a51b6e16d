"""Command line: ``schoolroom smoke`` (more commands arrive with the protocols)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def smoke(args: argparse.Namespace) -> int:
    """Load the model and solve a few synthetic problems: proves the install works."""
    from rich.console import Console
    from rich.table import Table

    from schoolroom.agents.engines import Params, Prompt
    from schoolroom.agents.engines.hf import HFEngine
    from schoolroom.environment import answers_match, extract_answer, synthetic
    from schoolroom.environment.prompts import chat, render

    console = Console()
    t0 = time.perf_counter()
    engine = HFEngine(args.model)
    how = "from the cache" if engine.source.cached else f"converted in {engine.source.convert_s:.1f}s"
    console.print(f"loaded {args.model} ({how}) in {time.perf_counter() - t0:.1f}s")
    problems = synthetic(args.n, steps=[1, 2, 3], seed=args.seed)
    prompts = [Prompt(messages=chat(render("student_solve", question=p.question))) for p in problems]
    t0 = time.perf_counter()
    outs = engine.generate(prompts, Params(max_tokens=args.max_tokens))
    table = Table("problem", "steps", "gold", "answer", "correct")
    right = 0
    for p, (c,) in zip(problems, outs):
        ans = extract_answer(c.text)
        ok = answers_match(ans, p.answer)
        right += ok
        table.add_row(p.question, str(len(p.gold_steps)), p.answer, str(ans), "yes" if ok else "no")
    console.print(table)
    console.print(f"{right}/{len(problems)} correct; generation {time.perf_counter() - t0:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="schoolroom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("smoke", help="load the model and solve a few synthetic problems")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("-n", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=96)
    p.set_defaults(func=smoke)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
