"""Protocols written outside the package: a file named by the config, run, killed, resumed and replayed by the
CLI alone; its own role and message type on Ray actors and in the log; an installed entry point found."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schoolroom import config as configlib
from schoolroom import log
from schoolroom import plugins as pluginlib
from schoolroom.classroom import loading as registry
from schoolroom.classroom import runner
from schoolroom.config import dump
from schoolroom.messages import Call

PLUGIN = Path(__file__).parent / "plugins" / "critique.py"


def critique_config(address: str = "inline", rounds: int = 2, n: int = 2) -> dict:
    return {
        "run": {"name": "critique", "seed": 0},
        "runtime": {"address": address},
        "data": {"eval": {"source": "synthetic", "n": n, "steps": [2, 3], "seed": 3}},
        "agents": {
            "student": {"role": "student", "max_tokens": 24, "resources": {"num_cpus": 1}},
            "verifier": {"role": "verifier", "resources": {"num_cpus": 0}},
            "critic": {"role": "critic", "resources": {"num_cpus": 0}},
        },
        "protocol": {"name": "critique", "file": "critique.py", "rounds": rounds},
    }


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schoolroom.cli", *args], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A folder outside the package with the protocol file and its config (one for the module: a process that
    loads the file from two places has two modules declaring one message tag)."""
    folder = tmp_path_factory.mktemp("lab")
    shutil.copy(PLUGIN, folder / "critique.py")
    (folder / "critique.toml").write_text(dump(critique_config(rounds=3)))
    return folder


UNTOLD = """
import sys, msgspec
from schoolroom import log
from schoolroom import plugins as pluginlib
from schoolroom.messages import Unknown
print(msgspec.json.encode([m for m in log.read_all(sys.argv[1]) if isinstance(m, Unknown)]).decode())
"""


def calls(run_dir: Path) -> list[Call]:
    return [m for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, Call)]


@pytest.mark.slow
def test_a_protocol_file_runs_resumes_after_a_kill_and_replays_by_the_cli(lab):
    proc = subprocess.Popen([sys.executable, "-m", "schoolroom.cli", "run", str(lab / "critique.toml"), "--out",
                             str(lab / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill it once the critic has answered round 1
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            logs = list((lab / "killed").glob("*/messages.jsonl"))
            if logs and b'"method":"critique"' in logs[0].read_bytes():
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = logs[0].parent
    assert not (run_dir / "report.md").exists()
    before = calls(run_dir)
    resolved = configlib.load(run_dir / "config.toml")[0].protocol
    assert resolved["file"] == str((lab / "critique.py").resolve()) and resolved["rounds"] == 3

    out = cli("resume", str(run_dir), cwd="/")  # the run directory alone: its config says where the file is
    assert out.returncode == 0, out.stderr[-3000:]
    after = calls(run_dir)
    keys = [c.key for c in after if c.method in ("solve", "check", "critique")]
    assert len(keys) == len(set(keys)) == 9, "a call answered before the kill was asked again"
    solved = [c.key for c in before if c.method == "solve"]
    assert solved and solved == [c.key for c in after if c.method == "solve"][:len(solved)]
    report = (run_dir / "report.md").read_text()
    assert "## Per round" in report and "| 3 |" in report
    assert len(json.loads((run_dir / "metrics.json").read_text())["rounds"]) == 3

    # a reader that was not told about the Critique type (a fresh process) keeps its records as Unknown ones
    out = subprocess.run([sys.executable, "-c", UNTOLD, str(run_dir / "messages.jsonl")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    untold = json.loads(out.stdout)
    assert untold and all(m["record_type"] == "critique" and m["data"]["text"].endswith("check each step.")
                          for m in untold)
    # told (replay loads the run's protocol file), it reads them typed
    out = cli("replay", str(run_dir), "--out", str(lab / "replayed"))  # killed, resumed: replays to its report
    assert out.returncode == 0 and "no agent started; report, metrics and plots equal the run's" in out.stdout, \
        out.stdout[-3000:] + out.stderr[-3000:]
    pluginlib.load_for_run(run_dir)
    typed = [m for m in log.read_all(run_dir / "messages.jsonl") if type(m).__name__ == "Critique"]
    assert [m.id for m in typed] == [m["id"] for m in untold]


@pytest.mark.slow
def test_a_role_and_message_declared_in_the_file_work_on_ray_actors(lab, ray_local):
    path = lab / "critique_ray.toml"
    path.write_text(dump(critique_config(address="local", rounds=2, n=3)))
    cfg, _ = configlib.load(path)
    run_dir = runner.run(cfg, source=str(path), out=str(lab / "ray"))
    critiques = [m for m in log.read_all(run_dir / "messages.jsonl") if type(m).__name__ == "Critique"]
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    assert critiques and len(critiques) == sum(r["critiques"] for r in rounds)
    assert all(m.sender == "critic" for m in critiques)
    # round 1's critiques went into the critic's actor and were read there as Critique messages
    assert [m.text.startswith("Again: ") for m in critiques] == [False] * rounds[0]["critiques"] + [
        m.problem_id in {c.problem_id for c in critiques[:rounds[0]["critiques"]]} for m in critiques[rounds[0]["critiques"]:]]
    assert any(m.text.startswith("Again: ") for m in critiques)


def test_config_errors_name_the_protocol_file_and_unknown_roles(lab):
    raw = critique_config()
    raw["protocol"]["file"] = "missing.py"
    with pytest.raises(configlib.ConfigError, match=r"no protocol file .*missing.py - at `\$.protocol.file`"):
        runner.protocol_of(configlib.decode(raw), str(lab / "x.toml"))
    raw = critique_config()
    raw["agents"]["critic"]["role"] = "critik"
    with pytest.raises(configlib.ConfigError, match=r"unknown role 'critik' - at `\$.agents.critic.role`"):
        runner.protocol_of(configlib.decode(raw), str(lab / "x.toml"))
    (lab / "broken.py").write_text("from schoolroom.api import protocol\ndef oops(:\n")
    raw = critique_config()
    raw["protocol"]["file"] = "broken.py"
    with pytest.raises(configlib.ConfigError, match=r"cannot import the protocol: SyntaxError.* - at `\$.protocol.file`"):
        runner.protocol_of(configlib.decode(raw), str(lab / "x.toml"))
    raw = critique_config()
    del raw["protocol"]["name"]  # the file declares one protocol: that one
    assert runner.protocol_of(configlib.decode(raw), str(lab / "x.toml"))[0].name == "critique"
    raw = critique_config()
    raw["protocol"]["roundz"] = 2
    with pytest.raises(configlib.ConfigError, match=r"roundz"):
        runner.protocol_of(configlib.decode(raw), str(lab / "x.toml"))


def test_an_installed_entry_point_is_found(tmp_path, monkeypatch):
    """A package that declares ``[project.entry-points."schoolroom.protocols"]`` is found by name, listed, and its
    module recorded in the resolved config."""
    pkg = tmp_path / "site" / "mylab_protocols"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN.read_text().replace('"critique"', '"lab_critique"')
                                     .replace('tag="critique"', 'tag="lab_critique"')
                                     .replace('role("critic")', 'role("lab_critic")'))
    dist = tmp_path / "site" / "mylab_protocols-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab-protocols\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[schoolroom.protocols]\nlab_critique = mylab_protocols\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    raw = critique_config()
    raw["protocol"] = {"name": "lab_critique", "rounds": 1}
    raw["agents"]["critic"]["role"] = "lab_critic"
    p, settings, where = runner.protocol_of(configlib.decode(raw), str(tmp_path / "x.toml"))
    assert p.name == "lab_critique" and settings.rounds == 1 and where.keys == {"module": "mylab_protocols"}
    assert "lab_critique" in [x.name for x in registry.available() if not isinstance(x, tuple)]
    path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    out = cli("protocols", env=os.environ | {"PYTHONPATH": path})
    assert out.returncode == 0 and "lab_critique" in out.stdout and "rounds" in out.stdout, out.stderr[-2000:]
