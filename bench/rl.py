"""Seconds per RL iteration, split into generate / score / train / adapter hand-off, for PPO and GRPO, with MFU.

    python bench/rl.py [--iterations 2] [--batch 8] [--n 4] [--reward prm|orm|answer] [--inline] [--threads 2]
                       [--overlap]
                       [--baseline COMMIT [--reps 3] [--setting KEY=JSON ...]]

Runs the reinforce protocol's iteration through a Classroom (agents as local Ray actors, or in this process
with --inline): student.solve -> verifier.score -> trainer.train -> student.load, timing each call. PPO and
GRPO start from the base model and see the same prompts. With --reward prm or orm, a reward model is first
trained for one step (its quality does not matter here, only what scoring with it costs). Prints the mean
seconds of each stage, the share of generation and of training in the whole, and GRPO's iteration time over
PPO's. MFU, against this machine's matmul rate in the dtype used: generation counts 2 x the matrix weights
for every prompt token read (once per problem: its samples share the prefill) and completion token written;
training counts what the trainer reports (``model_flops``: 2N per token of its forward-only passes, 4N per token
it trains on), over the train call's seconds. With ``--baseline COMMIT``, that
commit's code (a git worktree) and this checkout's take turns on the same rollouts instead (``paired``), each
step in a fresh process, and the medians give seconds per iteration before and after (a machine whose speed
drifts by 30% between minutes, as these do, slows both sides alike).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roofline import gflops  # noqa: E402

from schoolroom import config as configlib  # noqa: E402
from schoolroom.classroom.room import Classroom  # noqa: E402
from schoolroom.log import Writer  # noqa: E402
from schoolroom.messages import TrainRequest, new_id, sequential_ids  # noqa: E402


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


PAIRED = """
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
what, batch, n, max_tokens, epochs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
from schoolroom import models
from schoolroom.agents.engines import Params
from schoolroom.agents.engines.base import render_prompt
from schoolroom.agents.student import solve_prompt
from schoolroom.environment import synthetic
problems = synthetic(batch, steps=[1, 2, 3], seed=7)
if what == "generate":
    from schoolroom.agents.engines.hf import HFEngine
    engine = HFEngine(batch_size=16)
    engine.generate([solve_prompt(problems[0])], Params(max_tokens=4))
    t = time.perf_counter()
    outs = engine.generate([solve_prompt(p) for p in problems], Params(max_tokens=max_tokens, temperature=1.0, n=n,
                                                                       stop_after="####"))
    seconds = time.perf_counter() - t
    tok = engine.tokenizer
    rollouts = [dict(prompt=render_prompt(tok, solve_prompt(p)), completion=c.text, reward=float(p.answer in c.text),
                     group=p.problem_id, completion_ids=list(c.token_ids), logprobs=list(c.logprobs))
                for p, cs in zip(problems, outs) for c in cs]
    print(json.dumps({"seconds": seconds, "rollouts": rollouts}))
else:
    from schoolroom.training.rl import Rollout
    rollouts = [Rollout(**r) for r in json.load(open(sys.argv[7]))]
    if what == "ppo":
        from schoolroom.training.ppo import train_ppo as train
    else:
        from schoolroom.training.grpo import train_grpo as train
    tok = models.load_tokenizer("smollm2-135m-instruct")
    t = time.perf_counter()
    m = train(models.resolve("smollm2-135m-instruct").path, rollouts, tempfile.mkdtemp(), tokenizer=tok,
              settings={"epochs": epochs, "batch_size": 8, "learning_rate": 1e-4, "temperature": 1.0,
                        **json.loads(sys.argv[8])},
              lora={"init_lora_weights": False})  # an adapter unlike its reference, as after the first iteration
    print(json.dumps({"seconds": time.perf_counter() - t, "metrics": m}))
"""


def paired(commit: str, args) -> None:
    """Before/after on the same rollouts and settings, in one run: ``commit``'s code and this checkout's take turns
    (``--reps`` rounds, each in a fresh process: generating the student's sampled request, then a PPO and a GRPO
    training call on the same rollouts, which the first generation wrote), so a busy machine slows both alike;
    medians, and an iteration = generate + train. The adapter trained starts unlike the base model (random LoRA
    weights), as every iteration after the first: the reference's log-probabilities take their own pass. With
    ``--setting``, a third side trains this checkout's code with those settings (its generation is this side's)."""
    import subprocess

    from bench_worktree import worktree

    old_name = commit[:7]
    code = {old_name: worktree(commit), "this": Path(__file__).resolve().parents[1]}
    extra = {old_name: {}, "this": {}}
    if args.setting:
        code["this+"], extra["this+"] = code["this"], dict(args.setting)
    common = [str(args.batch), str(args.n), str(args.max_tokens), str(args.epochs)]
    data = Path(tempfile.mkdtemp(prefix="bench-rl-")) / "rollouts.json"

    def run(side: str, what: str) -> dict:
        out = subprocess.run([sys.executable, "-c", PAIRED, str(code[side]), what, *common, str(data),
                              json.dumps(extra[side])], capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    times: dict[str, dict[str, list[float]]] = {side: {"generate": [], "ppo": [], "grpo": []} for side in code}
    flops: dict[str, dict[str, float]] = {side: {} for side in code}
    for rep in range(args.reps):
        for side in (list(code) if rep % 2 == 0 else list(reversed(code))):
            if side != "this+":
                g = run(side, "generate")
                times[side]["generate"].append(g["seconds"])
                if not data.exists():
                    data.write_text(json.dumps(g["rollouts"]))
            for algo in ("ppo", "grpo"):
                r = run(side, algo)
                times[side][algo].append(r["seconds"])
                flops[side][algo] = r["metrics"].get("model_flops", 0.0)
            print(f"round {rep + 1} {side}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times[side].items() if v),
                  flush=True)
    if "this+" in times:
        times["this+"]["generate"] = times["this"]["generate"]
    med = {side: {k: statistics.median(v) for k, v in t.items()} for side, t in times.items()}
    roof = gflops(__import__("torch").float32)
    old = med[old_name]
    print(f"{args.reps} rounds, medians (s); the same {args.batch} x {args.n} rollouts (<= {args.max_tokens} tokens) "
          f"for every training call; epochs {args.epochs}; float32 roofline {roof:.0f} GFLOP/s"
          + (f"; this+ = this with {json.dumps(extra['this+'])}" if "this+" in code else ""))
    print(f"generate: {old_name} {old['generate']:.1f} | this {med['this']['generate']:.1f} | "
          f"{old['generate'] / med['this']['generate']:.2f}x faster")
    for side in [s for s in code if s != old_name]:
        new = med[side]
        for algo in ("ppo", "grpo"):
            it_old, it_new = old["generate"] + old[algo], new["generate"] + new[algo]
            mfu = flops[side][algo] / new[algo] / (roof * 1e9) if flops[side].get(algo) else None
            print(f"{algo.upper()} train: {old_name} {old[algo]:.1f} | {side} {new[algo]:.1f} | "
                  f"{old[algo] / new[algo]:.2f}x faster" + (f" (MFU {mfu:.0%})" if mfu else ""))
            print(f"{algo.upper()} iteration (generate + train): {old_name} {it_old:.1f} | {side} {it_new:.1f} | "
                  f"{it_old / it_new:.2f}x faster; training share {new[algo] / it_new:.0%} "
                  f"(was {old[algo] / it_old:.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="problems per iteration")
    ap.add_argument("--n", type=int, default=4, help="rollouts per problem")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the rollouts per update")
    ap.add_argument("--reward", choices=["prm", "orm", "answer"], default="prm")
    ap.add_argument("--inline", action="store_true", help="agents in this process instead of Ray actors")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each agent")
    ap.add_argument("--overlap", action="store_true", help="the student writes iteration i+1's rollouts while the "
                    "trainer trains on i's (one step off-policy, as reinforce's overlap)")
    ap.add_argument("--baseline", metavar="COMMIT", help="instead: this version against COMMIT's, taking turns on "
                    "the same rollouts (generate, PPO train, GRPO train), --reps rounds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--setting", action="append", type=lambda kv: (kv.split("=")[0], json.loads(kv.split("=", 1)[1])),
                    metavar="KEY=JSON", help="with --baseline: a training setting for this checkout's side only "
                    "(one the old code lacks), e.g. --setting 'minibatches=\"groups\"'")
    args = ap.parse_args()
    if args.baseline:
        return paired(args.baseline, args)
    import torch

    from schoolroom import models
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.student import solve_prompt
    from schoolroom.training.common import matrix_weights

    roof = {"float32": gflops(torch.float32), "bfloat16": gflops(torch.bfloat16)}
    tok, lm, _ = models.load("smollm2-135m-instruct")
    per_token = 2 * matrix_weights(lm)
    del lm

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    agent = {"threads": args.threads, "resources": {"num_cpus": 0.5}}
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
        walls: dict[str, list[float]] = {"ppo": [], "grpo": []}
        flops: dict[str, dict[str, float]] = {}
        for offset, algo in ((0, "ppo"), (100, "grpo")):
            times = stages[algo] = {"generate": [], "score": [], "train": [], "hand-off": []}
            flops[algo] = {"generate": 0.0, "train": 0.0, "bf16": 0.0}
            adapter, following = None, None
            room.student.load(None)  # both start from the base model
            for it in room.rounds(args.iterations, start=offset + 1):
                begin = time.perf_counter()
                batch = problems[(it - offset - 1) * args.batch:(it - offset) * args.batch]
                if following is None:
                    rollouts, t = timed(room.student.solve, batch, n=args.n, temperature=1.0)
                else:  # --overlap: written while the last update trained; what is left is waiting for it
                    rollouts, t = timed(room.wait, following)
                times["generate"].append(t)
                read = sum(len(tok(render_prompt(tok, solve_prompt(p)), add_special_tokens=False)["input_ids"])
                           for p in batch)
                flops[algo]["generate"] += per_token * (read + sum(a.tokens for a in rollouts))
                rewards, t = timed(room.verifier.score, rollouts, batch, scorer=scorer)
                times["score"].append(t)
                request = TrainRequest(kind=algo, name=algo, data=tuple(m.id for m in rollouts + rewards),
                                       base_adapter=adapter.adapter if adapter else None,
                                       hyper=hyper | ({"old_logprobs": "sampled"} if args.overlap else {}))
                t = time.perf_counter()
                training = room.trainer.train.submit(request, rollouts + rewards, batch)
                if args.overlap and it - offset < args.iterations:
                    following = room.student.solve.submit(problems[(it - offset) * args.batch:
                                                                   (it - offset + 1) * args.batch], n=args.n,
                                                          temperature=1.0)
                adapter = room.wait(training)
                times["train"].append(time.perf_counter() - t)
                flops[algo]["train"] += adapter.metrics.get("model_flops", 0.0)
                flops[algo]["bf16"] = adapter.metrics.get("bf16", 0.0)
                _, t = timed(room.student.load, adapter)
                times["hand-off"].append(t)
                walls[algo].append(time.perf_counter() - begin)
        room.close()
    print(f"{args.iterations} iterations of {args.batch} problems x {args.n} rollouts (<= {args.max_tokens} tokens), "
          f"reward: {args.reward}, {'inline' if args.inline else 'Ray actors'}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads per agent" + (", overlap (one step off-policy)" if args.overlap else ""))
    print(f"matmul roofline: float32 {roof['float32']:.0f} GFLOP/s, bfloat16 {roof['bfloat16']:.0f} GFLOP/s; "
          f"{per_token / 1e6:.0f} MFLOP per token")
    totals = {}
    for algo, times in stages.items():
        mean = {k: statistics.fmean(v) for k, v in times.items()}
        totals[algo] = sum(mean.values())
        f = flops[algo]
        gen_mfu = f["generate"] / sum(times["generate"]) / (roof["float32"] * 1e9)  # the hf engine: float32
        train_roof = roof["bfloat16" if f["bf16"] else "float32"]
        train_mfu = f["train"] / sum(times["train"]) / (train_roof * 1e9) if f["train"] else None
        wall = statistics.fmean(walls[algo])
        print(f"{algo.upper():4} s/iteration: " + " | ".join(f"{k} {v:.1f}" for k, v in mean.items())
              + f" | total {totals[algo]:.1f} | generation share {mean['generate'] / totals[algo]:.0%}"
              + f" | training share {mean['train'] / totals[algo]:.0%} | wall {wall:.1f}")
        if not args.overlap:  # generation and training side by side on devices of their own: the longer one
            g, t = mean["generate"], mean["train"]
            print(f"     overlap where the student and the trainer have devices of their own (after the first "
                  f"iteration): {totals[algo]:.1f} -> {totals[algo] - min(g, t):.1f} s, "
                  f"{totals[algo] / (totals[algo] - min(g, t)):.2f}x (from this split)")
        print("     MFU: generation " + ("not measured (its time overlaps training's)" if args.overlap else
                                         f"{gen_mfu:.0%} (float32)") + ", training "
              + (f"{train_mfu:.0%} ({'bf16 autocast' if f['bf16'] else 'float32'})" if train_mfu is not None
                 else "not measured (this version's trainer reports no model_flops)"))
    print(f"ratio GRPO / PPO seconds per iteration: {totals['grpo'] / totals['ppo']:.2f}")


if __name__ == "__main__":
    main()
