"""Scale-out on a real local Ray: calls that run at the same time and log what one-at-a-time logs, replicas that
split a call and gather it in order, and an agent whose actor dies mid-call."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import KEY_ENV, content

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.agents.hosting.actors import ActorLost, spawn
from schoolroom.classroom import runner
from schoolroom.classroom.room import Classroom
from schoolroom.config import AgentConfig, Resources, RuntimeConfig
from schoolroom.messages import Call, Guidance, Note

pytestmark = pytest.mark.ray

WORKERS = "file:" + str(Path(__file__).parent / "plugins" / "workers.py")


def io_bound(url: str, concurrent: bool) -> dict:
    """first_step with two teachers behind an HTTP server that takes 0.8 s per answer; nothing else takes time."""
    teacher = {"role": "teacher", "engine": "openai", "model": "echo-model", "base_url": url, "api_key_env": KEY_ENV,
               "concurrency": 4, "max_tokens": 32, "resources": {"num_cpus": 0}}
    return {"run": {"name": "io"}, "runtime": {"address": "local", "concurrent": concurrent},
            "data": {"eval": {"source": "synthetic", "n": 4, "steps": [3], "seed": 0}},
            "agents": {"student": {"role": "student", "engine": "reference", "resources": {"num_cpus": 0}},
                       "t1": teacher, "t2": teacher,
                       "verifier": {"role": "verifier", "resources": {"num_cpus": 0}}},
            "protocol": {"name": "first_step", "teachers": ["t1", "t2"], "ks": [1, 2], "start": "base"}}


def echoed(messages, skip: set[str] = frozenset()) -> str:
    """The messages' content (but notes of the kinds in ``skip``), the echo server's clock left out of its
    replies."""
    kept = [m for m in messages if not (isinstance(m, Note) and m.kind in skip)]
    return re.sub(r"time=\S+", "time=T", json.dumps(content(kept)))


def span(messages) -> float:
    """Seconds from the problem set's note (the protocol's first act) to the last call record."""
    start = next(m.time for m in messages if isinstance(m, Note) and m.kind == "problem_set")
    return max(m.time for m in messages if isinstance(m, Call)) - start


def test_two_teachers_at_the_same_time_take_the_time_of_one_and_log_what_one_at_a_time_logs(katan, tmp_path,
                                                                                             ray_local):
    url = katan("--latency-ms", "800", "--max-concurrent", "64")
    runs = {c: runner.run(configlib.decode(io_bound(url, c)), out=str(tmp_path / str(c))) for c in (False, True)}
    one_by_one, together = (log.read_all(runs[c] / "messages.jsonl") for c in (False, True))
    assert sum(isinstance(m, Guidance) for m in together) == 16  # 2 teachers x k in (1, 2) x 4 problems
    assert echoed(together) == echoed(one_by_one)
    # one at a time: 4 guide calls of ~0.8 s; together: each teacher's 2 calls, the teachers side by side
    assert span(one_by_one) > 3.0
    assert span(together) < 0.65 * span(one_by_one), (span(together), span(one_by_one))


def test_replicas_split_a_call_and_gather_it_in_order(ray_local):
    rt = RuntimeConfig(address="local", max_restarts=0)
    worker = spawn("w", AgentConfig(role="worker", replicas=2, resources=Resources(num_cpus=0)), rt,
                   plugins=(WORKERS,))
    try:
        assert worker.result(worker.submit("load", "v1"))[0] == "v1"  # an effect call goes to every replica
        pieces = [worker.submit("where", [i, i + 1], delay=0.3) for i in range(0, 8, 2)]  # as the call path cuts
        out = [row for s in pieces for row in worker.result(s, 60)[0]]
        assert [x for _, x, _ in out] == list(range(8))
        assert len({pid for pid, _, _ in out}) == 2 and {tag for _, _, tag in out} == {"v1"}
    finally:
        worker.kill()


def test_a_classroom_spreads_a_batched_call_over_replicas(ray_local, tmp_path):
    raw = {"runtime": {"address": "local", "chunk_size": 3},
           "agents": {"w": {"role": "worker", "replicas": 2, "resources": {"num_cpus": 0}}}}
    cfg = configlib.decode(raw)
    room = Classroom(cfg, log.Writer(tmp_path / "m.jsonl", run_id="r"), "r", workdir=str(tmp_path),
                     plugins=(WORKERS,))
    try:
        w = room.agent("w")
        out = w.where(list(range(10)))
        assert [x for _, x, _ in out] == list(range(10)) and len({pid for pid, _, _ in out}) == 2
        calls = [m for m in log.read_all(tmp_path / "m.jsonl") if isinstance(m, Call)]
        assert len(calls) == 4  # pieces of chunk_size, keyed as with one replica
    finally:
        room.close()


def test_a_dead_replica_is_restarted_and_asked_again_within_the_bound(ray_local):
    import ray

    rt = RuntimeConfig(address="local", max_restarts=1)
    worker = spawn("w", AgentConfig(role="worker", resources=Resources(num_cpus=0)), rt, plugins=(WORKERS,))
    try:
        worker.result(worker.submit("load", "v2"))
        first_pid = worker.result(worker.submit("where", [0]))[0][0][0]
        sent = worker.submit("where", [1, 2], delay=3.0)
        ray.kill(worker.actors[0].actor, no_restart=False)
        (rows, side) = worker.result(sent, 120)
        assert [x for _, x, _ in rows] == [1, 2] and rows[0][0] != first_pid
        assert rows[0][2] == "v2", "the restarted actor was given the adapter it had loaded"
        assert [n.kind for n in side] == ["actor_restarted"] and "restarted" in side[0].text
        sent = worker.submit("where", [3], delay=3.0)
        ray.kill(worker.actors[0].actor, no_restart=False)
        with pytest.raises(ActorLost, match=r"died in w.where again after 1 restarts.*runtime.max_restarts = 1"):
            worker.result(sent, 120)
    finally:
        worker.kill()


def echo_student(url: str) -> dict:
    """first_step whose student answers through an HTTP server taking 0.5 s per answer (so it can be killed
    mid-call), 4 problems in pieces of 2."""
    return {"run": {"name": "kill"}, "runtime": {"address": "local", "chunk_size": 2},
            "data": {"eval": {"source": "synthetic", "n": 4, "steps": [3], "seed": 0}},
            "agents": {"student": {"role": "student", "engine": "openai", "model": "echo-model", "base_url": url,
                                   "api_key_env": KEY_ENV, "concurrency": 1, "max_tokens": 32,
                                   "resources": {"num_cpus": 0}},
                       "reference": {"role": "teacher", "engine": "reference", "resources": {"num_cpus": 0}},
                       "verifier": {"role": "verifier", "resources": {"num_cpus": 0}}},
            "protocol": {"name": "first_step", "teachers": ["reference"], "ks": [0, 1], "start": "base"}}


def test_a_student_killed_mid_round_is_restarted_and_the_run_ends_as_if_it_had_not_been(katan, tmp_path,
                                                                                       ray_local, monkeypatch):
    import ray

    url = katan("--latency-ms", "500", "--max-concurrent", "16")
    whole = runner.run(configlib.decode(echo_student(url)), out=str(tmp_path / "whole"))
    rooms, killed = [], []
    ready = Classroom._wait_ready
    monkeypatch.setattr(Classroom, "_wait_ready", lambda self: (rooms.append(self), ready(self))[1])

    def progress(label: str, done: int, total: int) -> None:
        if label.startswith("student.solve") and done == 1 and total > 1 and not killed:
            killed.append(label)  # its second piece is on the actor now
            ray.kill(rooms[0].agents["student"].host.actors[0].actor, no_restart=False)

    run_dir = runner.run(configlib.decode(echo_student(url)), out=str(tmp_path / "killed"), progress=progress)
    assert killed
    notes = [m for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, Note) and m.kind == "actor_restarted"]
    assert len(notes) == 1 and notes[0].data["agent"] == "student"
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (whole, run_dir)]
    for m in metrics:  # what measures wall time
        del m["wall_s"], m["parts_s"]
        for row in m["usage"]:
            del row["latency_s"]
    assert metrics[0] == metrics[1]
    assert "restarted" in (run_dir / "report.md").read_text()
    assert echoed(log.read_all(run_dir / "messages.jsonl"), skip={"actor_restarted"}) == \
        echoed(log.read_all(whole / "messages.jsonl"))


def test_agents_of_one_group_share_a_placement_group_packed_on_one_node(ray_local, tmp_path):
    import ray

    raw = {"runtime": {"address": "local"},
           "agents": {"a": {"role": "worker", "replicas": 2, "resources": {"num_cpus": 0.25, "group": "pair"}},
                      "b": {"role": "worker", "resources": {"num_cpus": 0.5, "group": "pair"}},
                      "c": {"role": "worker", "resources": {"num_cpus": 0}}}}
    room = Classroom(configlib.decode(raw), log.Writer(tmp_path / "m.jsonl", run_id="r"), "r", workdir=str(tmp_path),
                     plugins=(WORKERS,))
    try:
        groups = {n: [ray.get(h.actor.placement_group.remote(), timeout=60) for h in room.agents[n].host.actors]
                  for n in "abc"}
        assert groups["c"] == [None] and groups["a"][0] is not None
        assert set(groups["a"]) | set(groups["b"]) == {groups["a"][0]}
        table = ray.util.placement_group_table()[groups["a"][0]]
        assert table["strategy"] == "STRICT_PACK" and len(table["bundles"]) == 3
    finally:
        room.close()
    assert ray.util.placement_group_table()[groups["a"][0]]["state"] == "REMOVED"


def side_by_side_log(tmp_path: Path, delays: tuple, concurrent: bool = True) -> tuple[list, float]:
    """Two items side by side, each asking its own worker twice (with delays) and recording a note after each
    answer: what the log says, in order, and how long the items took."""
    worker = {"role": "worker", "resources": {"num_cpus": 0}}
    raw = {"runtime": {"address": "local", "concurrent": concurrent}, "agents": {"w1": worker, "w2": worker}}
    path = tmp_path / f"{delays}-{concurrent}.jsonl"
    room = Classroom(configlib.decode(raw), log.Writer(path, run_id="r"), "r", workdir=str(tmp_path),
                     plugins=(WORKERS,))

    def item(x: tuple) -> list:
        name, ds = x
        out = []
        for d in ds:
            out += room.agent(name).where([len(out)], delay=d)
            room.record(Note(kind="step", text=f"{name} has {len(out)}"))
        return out

    try:
        t = time.perf_counter()
        got = room.side_by_side(item, [("w1", delays[0]), ("w2", delays[1])])
        seconds = time.perf_counter() - t
    finally:
        room.close()
    assert [[x for _, x, _ in rows] for rows in got] == [[0, 1], [0, 1]]
    said = [(m.agent, m.method) if isinstance(m, Call) else m.text for m in log.read_all(path)
            if isinstance(m, Call) or (isinstance(m, Note) and m.kind == "step")]
    return said, seconds


def test_side_by_side_items_overlap_and_log_in_the_same_order_whatever_finishes_first(ray_local, tmp_path):
    fast_first, t1 = side_by_side_log(tmp_path, ((0.5, 0.5), (1.0, 1.0)))
    slow_first, t2 = side_by_side_log(tmp_path, ((1.0, 1.0), (0.5, 0.5)))
    one_by_one, t3 = side_by_side_log(tmp_path, ((1.0, 1.0), (0.5, 0.5)), concurrent=False)
    assert fast_first == slow_first == one_by_one
    assert fast_first[:4] == [("w1", "where"), ("w2", "where"), "w1 has 1", ("w1", "where")]
    assert max(t1, t2) < 2.5 < t3, (t1, t2, t3)  # side by side: the slower item's 2 s; one by one: 3 s
