"""What lets GPU engines start and restart cleanly, tested on the CPU: vLLM engines on one machine start one after
another (a lock file), and Ray kills what a dead actor started (its vLLM engine process), so a restart finds its GPU
free."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time

import pytest


def _start(seconds: float, out) -> None:
    from schoolroom.agents.engines.vllm import one_start_at_a_time

    with one_start_at_a_time(gpu=True):
        t0 = time.monotonic()
        time.sleep(seconds)  # an engine loading its weights and sizing its KV cache
        out.put((t0, time.monotonic()))


def test_engines_on_one_machine_start_one_after_another():
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_start, args=(1.0, out)) for _ in range(3)]
    for p in procs:
        p.start()
    spans = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"two starts overlapped: {spans}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.ray
def test_a_killed_actors_child_process_is_killed_too():
    """A vLLM engine runs in a process of its own beside the actor. An actor killed outright (out of memory, a
    crash) runs no exit handler: the raylet kills its process group, as ``start_ray`` asks. With that off
    (RAY_process_group_cleanup_enabled=0) the child was seen alive after 15 s."""
    import ray

    from schoolroom.agents.hosting.worker import start_ray
    from schoolroom.config import RuntimeConfig

    ray.shutdown()  # start_ray sets the raylet's setting when it starts it
    start_ray(RuntimeConfig(address="local", num_cpus=2))

    @ray.remote(num_cpus=0, max_restarts=0)
    class Engine:
        def start(self):
            return os.getpid(), subprocess.Popen(["sleep", "600"]).pid

    engine = Engine.remote()  # held: an actor whose last handle is dropped is stopped, and its child with it
    pid, child = ray.get(engine.start.remote())
    assert subprocess.run(["false"]).returncode == 1, "this driver reaps its own children (Ray's subreaper setting)"
    assert _alive(child)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # Ray's documentation: within 10 seconds
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the dead actor's child process was left running"
