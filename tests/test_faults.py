"""Faults as a person meets them: problems found before anything starts (one line each, no run directory), an
agent failing mid-run (one paragraph, the traceback in RUN/error.log), a closed pipe, a training whose loss
goes NaN (stopped, the adapter it started from kept, the report says so)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import tomli_w
from conftest import tiny_config

from schoolroom import cli

QUIET = ("SCHOOLROOM_QUIET", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
         "TQDM_DISABLE", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "PYTHONWARNINGS")


@pytest.fixture
def schoolroom(monkeypatch, tmp_path, capsys):
    """``schoolroom ARGS`` in this process: (exit code, stderr, seconds); what the CLI sets in the environment
    is undone after the test."""
    for var in QUIET:
        monkeypatch.setenv(var, os.environ.get(var, ""))
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)

    def run(*args: str) -> tuple[int, str, float]:
        t0 = time.perf_counter()
        code = cli.main(list(args))
        return code, capsys.readouterr().err, time.perf_counter() - t0

    return run


def config_file(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(raw))
    return str(path)


def _cases(tmp_path: Path) -> dict:
    """Each fault the door catches: how to make it, and the one line that says it."""
    return {
        "data": (lambda raw: raw["data"]["eval"].update(source="gsm8k", data_dir=str(tmp_path / "none")),
                 r"data\.eval: dataset gsm8k split test not found; looked in: .*none/gsm8k/test\.jsonl; "
                 r"hub openai/gsm8k: not tried, HF_HUB_OFFLINE is set"),
        "model": (lambda raw: raw["agents"]["student"].update(model="someone/no-such-model"),
                  r"agents\.student: model 'someone/no-such-model' is a hub id, not in the local Hugging Face "
                  r"cache, and the hub is offline \(HF_HUB_OFFLINE is set\)"),
        "key": (lambda raw: raw["agents"].update(api={"role": "teacher", "engine": "openai", "model": "m",
                                                      "api_key_env": "SCHOOLROOM_TEST_UNSET_KEY",
                                                      "resources": {"num_cpus": 0}}),
                r"agents\.api: the openai engine reads its API key from \$SCHOOLROOM_TEST_UNSET_KEY, which is "
                r"not set"),
        "device": (lambda raw: raw["agents"].update(tutor={"role": "teacher", "engine": "hf", "device": "cuda:0",
                                                           "resources": {"num_cpus": 0}}),
                   r"agents\.tutor: device = 'cuda:0' but resources\.num_gpus = 0: Ray shows an actor no GPU unless "
                   r"it asks for one"),
        "gpu": (lambda raw: (raw["agents"]["student"]["resources"].update(num_gpus=1, num_cpus=1),
                             raw["agents"]["student"].update(device="cuda", replicas=2)),
                r"resources: the agents ask for 2 GPU in all \(student 2\); this machine has 0"),
    }


@pytest.mark.parametrize("fault", ["data", "model", "key", "device", "gpu", "all"])
def test_what_can_be_checked_first_fails_in_seconds_with_one_line_and_no_run_directory(fault, tmp_path, schoolroom,
                                                                                      monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the GPU check has nothing to refuse")
    monkeypatch.delenv("SCHOOLROOM_TEST_UNSET_KEY", raising=False)
    raw = tiny_config(address="local")
    cases = _cases(tmp_path)
    chosen = list(cases) if fault == "all" else [fault]
    for name in chosen:
        cases[name][0](raw)
    code, err, seconds = schoolroom("run", config_file(tmp_path, raw), "--out", str(tmp_path / "runs"))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].endswith(f"the run cannot start ({len(chosen)} problem{'s' * (len(chosen) > 1)}):")
    assert len(lines) == 1 + len(chosen), err  # one line each, reported together
    for name, line in zip(chosen, lines[1:]):
        assert re.search(cases[name][1], line), (name, line)
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "a run that never started leaves no run directory"
    assert seconds < 10, f"{fault}: found after {seconds:.1f}s"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.ray
def test_an_agent_failing_mid_run_says_which_call_in_one_paragraph_and_keeps_the_traceback(tmp_path, schoolroom,
                                                                                          monkeypatch, ray_local):
    secret = "sk-schoolroom-fault-test-51f0"
    monkeypatch.setenv("SCHOOLROOM_TEST_FAULT_KEY", secret)
    raw = tiny_config(address="local")
    port = _closed_port()
    raw["agents"]["student"] = {"role": "student", "engine": "openai", "model": "m", "max_retries": 0,
                                "base_url": f"http://127.0.0.1:{port}/v1",
                                "api_key_env": "SCHOOLROOM_TEST_FAULT_KEY", "resources": {"num_cpus": 0}}
    code, err, _ = schoolroom("run", config_file(tmp_path, raw), "--out", str(tmp_path / "runs"))
    assert code == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "Traceback" not in err and "\x1b[" not in err and "RayTaskError" not in err
    # through a Ray actor too: the endpoint, the cause and the setting to fix
    assert re.search(rf"the run failed: agent student failed in student\.solve k=0: EngineError: "
                     rf"http://127\.0\.0\.1:{port}/v1 \(model m\): connection refused: nothing listens at "
                     rf"127\.0\.0\.1:{port}; in [\d.]+ s, not retried; check agents\.student\.base_url", err), err
    assert re.search(rf"[Ff]ull traceback in {re.escape(str(run_dir))}/error\.log", err), err
    assert err.strip().endswith(f"schoolroom resume {run_dir}")
    paragraph = err[err.index("the run failed"):].strip().splitlines()
    assert len(paragraph) == 3, err  # the cause; where the messages and the traceback are; the command
    trace = (run_dir / "error.log").read_text()
    assert "Traceback" in trace and "RayTaskError(EngineError)" in trace and "\x1b[" not in trace
    for text in (err, trace):
        assert secret not in text

    code, err, _ = schoolroom("resume", str(run_dir), "--debug")  # the same failure, the traceback shown
    assert code == 1 and "Traceback" in err and "schoolroom resume" in err
    assert (run_dir / "error.log").read_text().count("Traceback (most recent call last)") >= 2


def test_a_closed_pipe_is_a_quiet_exit(tiny_run):
    proc = subprocess.Popen([sys.executable, "-m", "schoolroom.cli", "replay", str(tiny_run), "--out",
                             str(tiny_run / "replay-pipe")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.slow
def test_a_nan_loss_stops_that_training_and_keeps_the_adapter_it_started_from(answer_42_adapter):
    from schoolroom.agents.trainer import Trainer
    from schoolroom.config import AgentConfig
    from schoolroom.environment import synthetic
    from schoolroom.messages import Note, Rationale, TrainRequest
    from schoolroom.reporting.sections import faults_markdown

    start = Path(answer_42_adapter.path)
    before = {p.name: p.read_bytes() for p in start.iterdir()}
    problems = synthetic(4, steps=[1, 2], seed=5)
    data = [Rationale(problem_id=p.problem_id, text=f"{p.gold_steps[0]}\n#### {p.answer}", source="test")
            for p in problems]
    trainer = Trainer("trainer", AgentConfig(role="trainer"), workdir=str(start.parents[1]))
    request = TrainRequest(kind="sft", name="boom", data=tuple(r.id for r in data), seed=0,
                           base_adapter=answer_42_adapter.adapter,  # continue it, at a learning rate that explodes
                           hyper={"max_steps": 4, "batch_size": 2, "learning_rate": 1e30})
    result = trainer.train(request, data, problems)
    assert result.failed is not None
    assert re.fullmatch(rf"training boom-r0-\w+ \(sft\) stopped: (loss|gradient norm) (nan|inf) at step [234]; the "
                        rf"adapter it started from is kept \({answer_42_adapter.adapter}\)", result.failed), result.failed
    assert (result.adapter, result.path) == (answer_42_adapter.adapter, answer_42_adapter.path)
    assert {p.name: p.read_bytes() for p in start.iterdir()} == before, "the adapter it started from is untouched"
    assert not any(p.name.startswith("boom-") for p in start.parent.iterdir()), "no half-trained adapter left"
    notes = [m for m in trainer.drain() if isinstance(m, Note) and m.kind == "training_failed"]
    assert len(notes) == 1 and notes[0].data["adapter"].startswith("boom-")
    assert f"- {result.failed}" in faults_markdown(notes)


def test_a_resumed_run_passes_a_logged_request_as_it_was_logged():
    """The crash sweep found it: a TrainRequest logged before the crash, remade by the resumed protocol, went to
    the trainer unstamped (round 0), and the adapter was named ``...-r0-...`` instead of ``...-r1-...``."""
    from schoolroom.classroom.callpath import CallPath
    from schoolroom.config import Config
    from schoolroom.log import Memory
    from schoolroom.messages import TrainRequest, sequential_ids

    def made() -> TrainRequest:
        with sequential_ids("run-1"):
            return TrainRequest(kind="sft", name="x")

    first = CallPath(Config(), Memory(), "run-1")
    new: list = []
    sent = first.stamp_inputs(made(), 1, new)
    assert (sent.round, sent.run_id, sent.sender) == (1, "run-1", "protocol") and new == [sent]
    first.log.write(new)  # logged with the call's answer

    resumed = CallPath(Config(), Memory(), "run-1", previous=first.log.messages)
    again = made()
    assert again.id == sent.id and again.round == 0
    new = []
    assert resumed.stamp_inputs(again, 1, new) == sent
    assert new == [], "logged once"
