"""Shared test setup: offline hub, the shared data directory, one model load and one Ray per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("SCHOOLROOM_DATA", str(ROOT.parent / "shared" / "data"))

DATA = Path(os.environ["SCHOOLROOM_DATA"])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.fail(f"the shared data directory {DATA} is missing: check out the project with ../shared beside it")
    return DATA


@pytest.fixture(scope="session")
def hf_engine():
    """The real SmolLM2-135M behind the hf engine, loaded once for the session."""
    from schoolroom.agents.engines.hf import HFEngine

    return HFEngine("smollm2-135m-instruct", batch_size=8)


VOLATILE = {"id", "time", "parents", "run_id", "key", "outputs", "seconds", "latency_s", "attempt_id", "data", "verdicts"}


def content(messages) -> list[dict]:
    """Messages without what differs between two identical runs: ids, times, latencies."""
    import msgspec

    return [{k: v for k, v in msgspec.to_builtins(m).items() if k not in VOLATILE} for m in messages]


def ensure_ray():
    """A light local Ray (2 CPUs, no dashboard), started once and reused; restarted after a test that stopped it."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000, logging_level="warning")
    return ray


@pytest.fixture
def ray_local():
    return ensure_ray()


def crashed_copy(run: Path, to: Path, keep: int, torn: int, adapters: bool = False) -> Path:
    """``run`` as a crash would have left it, in ``to``: its config (and adapters), the first ``keep`` lines of its log
    (line 0 is the header) and the first ``torn`` bytes of the next one (a torn line)."""
    to.mkdir()
    (to / "config.toml").write_text((run / "config.toml").read_text())
    if adapters:
        shutil.copytree(run / "adapters", to / "adapters")
    lines = (run / "messages.jsonl").read_bytes().splitlines(keepends=True)
    (to / "messages.jsonl").write_bytes(b"".join(lines[:keep]) + lines[keep][:torn])
    return to


def tiny_config(address: str = "inline", n: int = 3, max_tokens: int = 24, **protocol) -> dict:
    """A first_step run small enough for a test: 3 synthetic problems, few tokens."""
    return {
        "run": {"name": "tiny", "seed": 0},
        "runtime": {"address": address, "chunk_size": 2},
        "data": {"eval": {"source": "synthetic", "n": n, "steps": [1, 2, 3], "seed": 0}},
        "agents": {
            # 2 CPUs: the same torch threads inline (this process) and in the actor, so greedy outputs match
            "student": {"role": "student", "engine": "hf", "max_tokens": max_tokens, "batch_size": 4,
                        "resources": {"num_cpus": 2}},
            "reference": {"role": "teacher", "engine": "reference", "resources": {"num_cpus": 0}},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
        },
        "protocol": {"name": "first_step", "teachers": ["reference"], "ks": [0, 1], "start": "base", **protocol},
    }


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny first_step run in this process, TensorBoard on: what the replay, page and table tests read."""
    from schoolroom import config as configlib
    from schoolroom.classroom import runner

    return runner.run(configlib.decode(tiny_run_config()), out=str(tmp_path_factory.mktemp("tiny")))


def tiny_run_config() -> dict:
    raw = tiny_config(address="inline")
    raw["run"]["tensorboard"] = True
    return raw


@pytest.fixture(scope="session")
def answer_42_adapter(tmp_path_factory):
    """A LoRA adapter trained (inline, a few SFT steps) to answer "#### 42" to everything: easy to see loaded."""
    from schoolroom.agents.trainer import Trainer
    from schoolroom.config import AgentConfig
    from schoolroom.environment import synthetic
    from schoolroom.messages import Rationale, TrainRequest

    problems = synthetic(12, steps=[1, 2, 3], seed=42)
    data = [Rationale(problem_id=p.problem_id, text="#### 42", source="test") for p in problems]
    trainer = Trainer("trainer", AgentConfig(role="trainer"), workdir=str(tmp_path_factory.mktemp("run")))
    request = TrainRequest(kind="sft", name="answer42", data=tuple(r.id for r in data), seed=0,
                           hyper={"max_steps": 12, "batch_size": 4, "learning_rate": 5e-3})  # last loss ~5e-4: robust across CPUs
    return trainer.train(request, data, problems)


class Recording:
    """A real engine with every reply it gave kept: a spy, so a test can check what was parsed from each."""

    def __init__(self, inner):
        self.inner, self.replies, self.prompts = inner, [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, params):
        outs = self.inner.generate(prompts, params)
        self.replies += [c.text for cs in outs for c in cs]
        self.prompts += list(prompts)
        return outs


def check_parsed(replies: list[str], parsed: list, notes: list) -> None:
    """Every reply became exactly one Rationale (its text, its stated answer, steps taken from it) or one Note
    that quotes it, and a reply that states ``#### <number>`` after its steps was not skipped."""
    import re
    from collections import Counter

    from schoolroom.environment import answers_match

    made = Counter(r.text for r in parsed) + Counter(n.data["reply"].strip() for n in notes)
    assert made == Counter(x.strip() for x in replies), "one message per reply, nothing lost or invented"
    for r in parsed:  # the number the "####" line states (after its last "=": "#### 18 + 9 = 27" states 27)
        said = r.text.rsplit("####", 1)[1].split("\n", 1)[0].rsplit("=", 1)[-1] if "####" in r.text else ""
        m = re.match(r"\s*\$?(-?[\d.,]*\d)", said)  # a line that starts with its number ("#### #1" states none)
        assert m is None or answers_match(r.answer, m.group(1)), (r.answer, r.text)
        assert r.steps and all(s in r.text and not s.startswith("####") for s in r.steps), r.steps
    for n in notes:  # a reply that states its answer is skipped only when nothing but its #### line has words
        rest = [ln for ln in n.data["reply"].splitlines() if ln.strip() and not ln.strip().startswith("####")]
        stated = re.search(r"####\s*-?\d", n.data["reply"])
        assert rest == [] or not stated, f"a reply with steps stating its answer was skipped: {n.data}"


def replays_alike(run_dir: Path, out: Path | None = None):
    """Replay ``run_dir`` from its log with no agent: starting an agent, loading a model or starting Ray fails
    the test. The replayed report, metrics and plots must equal the run's (wall times aside)."""
    import ray
    import transformers

    from schoolroom import models
    from schoolroom.classroom import replay
    from schoolroom.classroom import room as classroom

    def forbidden(*args, **kwargs):
        raise AssertionError("replay started an agent, loaded a model or started Ray")

    with pytest.MonkeyPatch.context() as mp:
        for target, name in ((classroom, "spawn"), (models, "load"), (models, "resolve"), (ray, "init"),
                             (ray, "remote"), (transformers.AutoModelForCausalLM, "from_pretrained")):
            mp.setattr(target, name, forbidden)
        done = replay.replay(run_dir, out or run_dir / "replay")
    assert done.differences == [], done.differences
    assert done.answered > 0 and done.unlogged == 0
    return done


KEY_ENV = "SCHOOLROOM_TEST_API_KEY"
SECRET = "sk-schoolroom-test-9f3c1d2e7a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def katan(tmp_path, monkeypatch):
    """start(*flags, backend=..., model=...) -> base URL of a fresh llm-katan bound to loopback."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    exe = shutil.which("llm-katan") or str(Path(sys.executable).with_name("llm-katan"))
    procs = []

    def start(*flags: str, backend: str = "echo", model: str = "echo-model", wait_s: float = 180) -> str:
        port = _free_port()
        out = open(tmp_path / f"katan-{port}.log", "w")
        cmd = [exe, "--model", model, "--backend", backend, "--host", "127.0.0.1", "--port", str(port),
               "--disable-dashboard", "--stats-file", str(tmp_path / f"stats-{port}.json"), *flags]
        if backend == "transformers":
            cmd += ["--device", "cpu", "--no-quantize"]
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.time() + wait_s
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                return f"http://127.0.0.1:{port}/v1"
            except OSError:
                if procs[-1].poll() is not None:
                    break
                time.sleep(0.5)
        raise RuntimeError("llm-katan did not start:\n" + (tmp_path / f"katan-{port}.log").read_text()[-3000:])

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)
