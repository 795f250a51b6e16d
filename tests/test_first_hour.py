"""A new user's first hour: the shipped configs find their data with nothing set, a dead endpoint says which
and why and which setting to fix, `resume --set` changes an endpoint (and refuses what answered calls depend
on), and the command line's help, listings and hints read as they should."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
from conftest import KEY_ENV, SECRET, tiny_config

from schoolroom import cli
from schoolroom import config as configlib
from schoolroom.classroom import preflight, runner
from schoolroom.environment import datasets
from schoolroom.messages import Call

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


@pytest.fixture
def schoolroom(monkeypatch, capsys):
    """``schoolroom ARGS`` in this process: (exit code, stdout, stderr); what the CLI sets in the environment is
    undone after the test."""
    for var in ("SCHOOLROOM_QUIET", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
                "TQDM_DISABLE", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "PYTHONWARNINGS"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    import warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


# ---- item 2: the shipped configs' data, with $SCHOOLROOM_DATA unset


def test_a_shipped_gsm8k_config_passes_preflight_with_no_data_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("SCHOOLROOM_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # found on disk, not on the hub
    monkeypatch.chdir(tmp_path)  # from elsewhere than the checkout
    source = str(EXPERIMENTS / "first_step_gsm8k.toml")
    cfg, _ = configlib.load(source)
    runner.protocol_of(cfg, source)  # as `schoolroom run` does first
    preflight.check(cfg, source)  # raises NotStarted naming each problem
    assert datasets.resolve_data_dir() == ROOT.parent / "shared" / "data"


def test_every_shipped_config_finds_its_problem_sets_with_no_data_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("SCHOOLROOM_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    for path in sorted(EXPERIMENTS.glob("*.toml")):
        cfg, _ = configlib.load(path)
        assert preflight._data(cfg) == [], path.name


def test_the_variable_comes_before_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SCHOOLROOM_DATA", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(datasets.DatasetNotFound, match=re.escape(str(tmp_path / "gsm8k" / "test.jsonl"))):
        datasets.load("gsm8k", limit=2)


# ---- item 7: a dead endpoint, and resume --set


def _api_config(url: str) -> dict:
    """first_step with a student that copies the gold solution (no model) and an API teacher at ``url``."""
    raw = tiny_config(address="inline")
    raw["agents"]["student"] = {"role": "student", "engine": "reference", "resources": {"num_cpus": 0}}
    raw["agents"]["api"] = {"role": "teacher", "engine": "openai", "model": "echo-model", "base_url": url,
                            "api_key_env": KEY_ENV, "max_tokens": 16, "max_retries": 1, "backoff_s": 0.01,
                            "max_backoff_s": 0.05, "timeout_s": 5, "resources": {"num_cpus": 0}}
    raw["protocol"]["teachers"] = ["api"]
    return raw


def test_a_dead_endpoint_names_itself_the_cause_and_the_setting_and_resume_set_moves_it(
        katan, schoolroom, tmp_path):
    port = _closed_port()
    config = tmp_path / "dead.toml"
    config.write_text(tomli_w.dumps(_api_config(f"http://127.0.0.1:{port}/v1")))
    t0 = time.perf_counter()
    code, _, err = schoolroom("run", str(config), "--out", str(tmp_path / "runs"))
    assert code == 1
    assert time.perf_counter() - t0 < 30, "one retry, not a minute of them"
    assert re.search(rf"agent api failed in api\.guide .*http://127\.0\.0\.1:{port}/v1 \(model echo-model\): "
                     rf"connection refused: nothing listens at 127\.0\.0\.1:{port}; after 1 retry in .*; "
                     r"check agents\.api\.base_url", err), err
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = (run_dir / "config.toml").read_text()

    # a setting the answered calls depend on: refused in one line naming it, nothing changed
    code, _, err = schoolroom("resume", str(run_dir), "--set", "agents.api.max_tokens=8")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "agents.api.max_tokens" in err and "refused" in err, err
    assert (run_dir / "config.toml").read_text() == saved
    code, _, err = schoolroom("resume", str(run_dir), "--set", "agents.student.max_tokens=8")
    assert code == 2 and "agents.student.max_tokens" in err and (run_dir / "config.toml").read_text() == saved
    code, _, err = schoolroom("resume", str(run_dir), "--set", "agents.api.timeout_s=fast")  # a wrong type
    assert code == 2 and "--set agents.api.timeout_s=fast" in err and str(run_dir) not in err, err
    assert (run_dir / "config.toml").read_text() == saved

    # an allowed one that does not help yet (the port is still closed): written, and kept by the next resume
    code, _, err = schoolroom("resume", str(run_dir), "--set", "agents.api.max_retries=0")
    assert code == 1 and "not retried" in err, err
    assert configlib.load(run_dir / "config.toml")[0].agents["api"].max_retries == 0

    url = katan()  # the endpoint, moved
    code, out, err = schoolroom("resume", str(run_dir), "--set", f"agents.api.base_url={url}")
    assert code == 0, err
    cfg, _ = configlib.load(run_dir / "config.toml")
    assert cfg.agents["api"].base_url == url and cfg.agents["api"].max_retries == 0, "both kept"
    assert SECRET not in (run_dir / "config.toml").read_text()
    from schoolroom import log

    calls = [m for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, Call)]
    assert [c.method for c in calls if c.agent == "api"] == ["guide"] * 2, "k = 1 on 3 problems, chunks of 2"

    # the endpoint is no part of a call key: a run that stopped after its last call (no report yet), resumed at
    # another (dead) endpoint, asks nothing again
    (run_dir / "report.md").unlink()
    code, out, err = schoolroom("resume", str(run_dir), "--set", f"agents.api.base_url=http://127.0.0.1:{port}/v1")
    assert code == 0, err
    assert len([m for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, Call)]) == len(calls)
    assert (run_dir / "report.md").exists()


# ---- polish


def test_help_keeps_its_usage_lines():
    out = subprocess.run([sys.executable, "-m", "schoolroom.cli", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    lines = out.splitlines()
    for usage in ("schoolroom run CONFIG", "schoolroom resume RUN", "schoolroom protocols [NAME]"):
        assert any(line.strip().startswith(usage) for line in lines), out


def test_protocols_lists_one_line_each_and_one_in_full(schoolroom, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal cuts nothing
    code, out, _ = schoolroom("protocols")
    assert code == 0
    lines = out.strip().splitlines()
    from schoolroom.classroom import loading as registry

    # every protocol this process knows (earlier tests may have loaded protocol files): one line each
    names = [p[0] if isinstance(p, tuple) else p.name for p in registry.available()]
    assert {"best_of_n", "enriched", "first_step", "reinforce", "self_explore", "tailored"} <= set(names)
    assert [ln.split()[0] for ln in lines[:len(names)]] == names
    assert "step-level preference pairs from the student's own first pits." in out, "a whole sentence"
    assert "protocols NAME" in lines[-1] and len(lines) <= len(names) + 3
    code, out, _ = schoolroom("protocols", "best_of_n")
    assert code == 0
    assert re.search(r'human_labels\s+str\s+"prm800k_phase1_test_stepwise_critique_derived"', out), out
    assert "so the curve shows whether a verifier keeps up with voting." in out
    code, _, err = schoolroom("protocols", "no_such")
    assert code == 2 and "first_step" in err


def test_an_unknown_dataset_lists_synthetic_too(schoolroom, tmp_path):
    raw = tiny_config(address="inline")
    raw["data"]["eval"] = {"source": "gsm9k"}
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps(raw))
    code, _, err = schoolroom("run", str(config), "--out", str(tmp_path / "runs"))
    assert code == 2
    assert re.search(r"data\.eval: unknown dataset 'gsm9k'; known: synthetic .*gsm8k", err), err
    with pytest.raises(KeyError, match="synthetic problems are made"):
        datasets.load("synthetic")


def test_a_set_of_the_wrong_type_names_the_set_not_the_file(schoolroom, tmp_path):
    config = str(EXPERIMENTS / "quickstart.toml")
    code, _, err = schoolroom("run", config, "--set", "agents.student.max_tokens=lots")
    assert code == 2
    assert err.startswith("config error: --set agents.student.max_tokens=lots: Expected `int`, got `str`"), err
    assert "quickstart.toml" not in err
    bad = tmp_path / "bad.toml"  # a file wrong by itself is still named, --set or not
    bad.write_text(tomli_w.dumps({"agents": {"student": {"role": "student", "max_tokens": "many"}}}))
    with pytest.raises(configlib.ConfigError, match=rf"^{re.escape(str(bad))}: Expected `int`"):
        configlib.load(bad, ["agents.student.max_tokens=lots"])


def test_replay_of_a_config_says_it_wants_a_run_directory(schoolroom, tmp_path):
    config = str(EXPERIMENTS / "quickstart.toml")
    code, _, err = schoolroom("replay", config)
    assert code == 2
    assert "replay reads a run directory" in err and f"run {config}" in err and "damaged" not in err, err
    run_dir = tmp_path / "run"  # a run directory's own config.toml: the directory is named
    run_dir.mkdir()
    (run_dir / "messages.jsonl").write_text("")
    (run_dir / "config.toml").write_text(Path(config).read_text())
    code, _, err = schoolroom("replay", str(run_dir / "config.toml"))
    assert code == 2 and f"give the run directory {run_dir}" in err, err


def test_printed_hints_name_a_command_that_runs(monkeypatch, tmp_path):
    from schoolroom.errors import command

    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bindir))
    monkeypatch.chdir(tmp_path)
    hint = command()
    assert hint != "schoolroom" and os.access(hint, os.X_OK), hint
    assert subprocess.run([hint, "--help"], capture_output=True, timeout=120).returncode == 0
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ["PATH"])
    assert command() == "schoolroom"
