"""Scale-out of an I/O-bound first_step run: replicas and concurrent teachers on a local Ray, and what Ray costs.

    python bench/scale.py [--latency-ms 500] [--problems 64] [--sizes 1 2 4 8]

The teacher is the `openai` engine against llm-katan's echo backend (loopback) answering every request after a
fixed latency, so its calls wait on I/O and nothing else takes time (the student answers from the gold solution,
the verifier checks). Every run is the same first_step (k = 1, 2) on the same problems; calls are cut into pieces
of `chunk_size` 4, each agent sends 4 requests at a time. Three measurements:

1. **replicas**: the teacher as 1, 2, 4, 8 Ray actors; speedup = time(1) / time(N). Target: >= 3.5x at 4, >= 6x at 8.
2. **concurrent teachers**: N teachers, one actor each, guiding the same problems at the same time (N times the
   work); speedup = N * time(1) / time(N).
3. **Ray vs inline**: one teacher, one replica, on local Ray and in this process; ratio Ray / inline (target
   <= 1.05: Ray must cost almost nothing when it cannot help).

Time is the protocol's: from its first message to its last call record in the log (agents started; a 16-actor
start on 2 cores is seconds of imports, paid once per run however long it is). Each run's whole wall time, and
the speedup by it, is printed beside.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SCHOOLROOM_QUIET", "1")
os.environ["SCHOOLROOM_BENCH_KEY"] = "sk-bench-not-secret"

from schoolroom import config as configlib  # noqa: E402
from schoolroom import log  # noqa: E402
from schoolroom.classroom import runner  # noqa: E402
from schoolroom.messages import Call, Note  # noqa: E402


def start_echo(latency_ms: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("llm-katan") or str(Path(sys.executable).with_name("llm-katan"))
    proc = subprocess.Popen([exe, "--model", "echo-model", "--backend", "echo", "--host", "127.0.0.1", "--port",
                             str(port), "--disable-dashboard", "--latency-ms", str(latency_ms), "--max-concurrent",
                             "1024", "--stats-file", str(workdir / "katan-stats.json"), "--log-level", "warning"],
                            stdout=open(workdir / "katan.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"llm-katan did not start: see {workdir / 'katan.log'}")


def config(url: str, problems: int, teachers: int = 1, replicas: int = 1, address: str = "local") -> dict:
    teacher = {"role": "teacher", "engine": "openai", "model": "echo-model", "base_url": url, "max_tokens": 32,
               "api_key_env": "SCHOOLROOM_BENCH_KEY", "concurrency": 4, "replicas": replicas,
               "resources": {"num_cpus": 0}}
    names = [f"t{i + 1}" for i in range(teachers)]
    return {"run": {"name": f"scale-t{teachers}-r{replicas}-{address}"},
            "runtime": {"address": address, "chunk_size": 4},
            "data": {"eval": {"source": "synthetic", "n": problems, "steps": [3], "seed": 0}},
            "agents": {"student": {"role": "student", "engine": "reference", "resources": {"num_cpus": 0}},
                       "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
                       **{n: teacher for n in names}},
            "protocol": {"name": "first_step", "teachers": names, "ks": [1, 2], "start": "base"}}


def timed(raw: dict, out: Path) -> tuple[float, float]:
    """(protocol seconds from the log, whole run's wall seconds)."""
    t = time.perf_counter()
    run_dir = runner.run(configlib.decode(raw), out=str(out))
    wall = time.perf_counter() - t
    messages = log.read_all(run_dir / "messages.jsonl")
    start = next(m.time for m in messages if isinstance(m, Note) and m.kind == "problem_set")
    return max(m.time for m in messages if isinstance(m, Call)) - start, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-ms", type=int, default=500)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    args = ap.parse_args()
    console = Console(width=110)
    work = Path(args.out or tempfile.mkdtemp(prefix="schoolroom-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    proc, url = start_echo(args.latency_ms, work)
    try:
        console.print(f"echo server {url}: {args.latency_ms} ms per answer; {args.problems} problems, k = 1, 2; "
                      f"{os.cpu_count()} CPUs; runs in {work}")
        timed(config(url, 4), work / "warmup")  # Ray started, imports warm
        replicas = {n: timed(config(url, args.problems, replicas=n), work / f"replicas-{n}") for n in args.sizes}
        teachers = {n: timed(config(url, args.problems, teachers=n), work / f"teachers-{n}") for n in args.sizes}
        ray_t = timed(config(url, args.problems), work / "ray")
        inline_t = timed(config(url, args.problems, address="inline"), work / "inline")
    finally:
        proc.terminate()
    base = args.sizes[0]
    for title, rows, work_of in (("teacher replicas (same work)", replicas, lambda n: 1),
                                 ("concurrent teachers (N times the work)", teachers, lambda n: n)):
        table = Table(title=f"first_step, I/O-bound teacher: {title}")
        for c in ("N", "protocol s", "speedup over 1", "whole run s", "whole-run speedup"):
            table.add_column(c, justify="right")
        for n, (s, wall) in rows.items():
            work = work_of(n) / work_of(base)
            table.add_row(str(n), f"{s:.2f}", f"{work * rows[base][0] / s:.2f}x", f"{wall:.1f}",
                          f"{work * rows[base][1] / wall:.2f}x")
        console.print(table)
    console.print(f"one teacher, one replica: local Ray {ray_t[0]:.2f} s, inline {inline_t[0]:.2f} s; "
                  f"ratio Ray / inline = {ray_t[0] / inline_t[0]:.3f} (whole runs, starting Ray's actors included: "
                  f"{ray_t[1]:.1f} s / {inline_t[1]:.1f} s = {ray_t[1] / inline_t[1]:.3f})")


if __name__ == "__main__":
    main()
