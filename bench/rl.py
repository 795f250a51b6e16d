"""Seconds per RL iteration, split into generate / score / train / adapter hand-off, for PPO and GRPO.

    python bench/rl.py [--iterations 2] [--batch 8] [--n 4] [--reward prm|orm|answer] [--inline]

Runs the reinforce protocol's iteration through a Classroom (agents as local Ray actors, or in this process
with --inline): student.solve -> verifier.score -> trainer.train -> student.load, timing each call. PPO and
GRPO start from the base model and see the same prompts. With --reward prm or orm, a reward model is first
trained for one step (its quality does not matter here, only what scoring with it costs). Prints the mean
seconds of each stage, the share of generation in the whole, and GRPO's iteration time over PPO's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schoolroom import config as configlib  # noqa: E402
from schoolroom.classroom.room import Classroom  # noqa: E402
from schoolroom.log import Writer  # noqa: E402
from schoolroom.messages import TrainRequest, new_id, sequential_ids  # noqa: E402


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="problems per iteration")
    ap.add_argument("--n", type=int, default=4, help="rollouts per problem")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the rollouts per update")
    ap.add_argument("--reward", choices=["prm", "orm", "answer"], default="prm")
    ap.add_argument("--inline", action="store_true", help="agents in this process instead of Ray actors")
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    agent = {"threads": 2, "resources": {"num_cpus": 0.5}}
    cfg = configlib.decode({
        "runtime": {"address": "inline" if args.inline else "local"},
        "data": {"train": {"source": "synthetic", "n": args.batch * args.iterations, "steps": [1, 2, 3], "seed": 7}},
        "agents": {"student": {"role": "student", "max_tokens": args.max_tokens, **agent},
                   "trainer": {"role": "trainer", **agent},
                   "verifier": {"role": "verifier", **agent}}})
    workdir = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    run_id = "bench-rl-" + secrets.token_hex(2)
    hyper = {"epochs": args.epochs, "batch_size": 8, "learning_rate": 1e-4, "temperature": 1.0}
    with Writer(workdir / "messages.jsonl", run_id=run_id) as writer, sequential_ids(run_id):
        room = Classroom(cfg, writer, run_id, workdir=str(workdir))
        problems = room.problems("train")
        scorer = "answer"
        if args.reward != "answer":
            samples = room.student.solve(problems[: args.batch], n=2, temperature=1.0)
            verdicts = room.verifier.check(samples, problems)
            labels = room.verifier.score(samples, problems, scorer="answer")  # one label per step for a PRM
            data = samples + (verdicts if args.reward == "orm" else [])
            if args.reward == "prm":  # label every step with the attempt's outcome: enough to time scoring
                from msgspec.structs import replace

                data += [replace(r, id=new_id(), rewards=(r.score,) * len(s.steps), score=None, source="rollouts")
                         for r, s in zip(labels, samples)]
            rm = room.trainer.train(TrainRequest(kind=args.reward, data=tuple(m.id for m in data),
                                                 hyper={"max_steps": 1}), data, problems)
            room.verifier.load(rm)
            scorer = None
        stages: dict[str, dict[str, list[float]]] = {}
        for offset, algo in ((0, "ppo"), (100, "grpo")):
            times = stages[algo] = {"generate": [], "score": [], "train": [], "hand-off": []}
            adapter = None
            room.student.load(None)  # both start from the base model
            for it in room.rounds(args.iterations, start=offset + 1):
                batch = problems[(it - offset - 1) * args.batch:(it - offset) * args.batch]
                rollouts, t = timed(room.student.solve, batch, n=args.n, temperature=1.0)
                times["generate"].append(t)
                rewards, t = timed(room.verifier.score, rollouts, batch, scorer=scorer)
                times["score"].append(t)
                request = TrainRequest(kind=algo, name=algo, data=tuple(m.id for m in rollouts + rewards),
                                       base_adapter=adapter.adapter if adapter else None, hyper=hyper)
                adapter, t = timed(room.trainer.train, request, rollouts + rewards, batch)
                times["train"].append(t)
                _, t = timed(room.student.load, adapter)
                times["hand-off"].append(t)
        room.close()
    print(f"{args.iterations} iterations of {args.batch} problems x {args.n} rollouts (<= {args.max_tokens} tokens), "
          f"reward: {args.reward}, {'inline' if args.inline else 'Ray actors'}, {os.cpu_count()} CPUs")
    totals = {}
    for algo, times in stages.items():
        mean = {k: statistics.fmean(v) for k, v in times.items()}
        totals[algo] = sum(mean.values())
        print(f"{algo.upper():4} s/iteration: " + " | ".join(f"{k} {v:.1f}" for k, v in mean.items())
              + f" | total {totals[algo]:.1f} | generation share {mean['generate'] / totals[algo]:.0%}")
    print(f"ratio GRPO / PPO seconds per iteration: {totals['grpo'] / totals['ppo']:.2f}")


if __name__ == "__main__":
    main()
