"""bench/gpu_smoke.py where there is no GPU: the environment check runs, every GPU check says it skips and why, and
the command exits 0, in seconds (the GPU hidden from it, so this holds on a GPU machine too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_smoke.py"
GPU_CHECKS = ["vllm_lora", "vllm_two_engines", "rl_update", "hf_engine_bf16", "self_explore_cluster"]


def smoke(*flags: str, out: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *flags], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def test_without_a_gpu_the_gpu_checks_skip_and_the_command_passes(tmp_path):
    r = smoke(out=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    env = [ln for ln in lines if ln.startswith("ok   environment: ")]
    assert len(env) == 1 and "torch " in env[0] and "pip check" in env[0], lines
    for check in GPU_CHECKS:
        assert f"skip {check}: no GPU (torch.cuda.is_available() is false)" in lines, (check, lines)
    assert len(lines) == 1 + len(GPU_CHECKS) + 1 and lines[-1].startswith("summary: 1 ok, 0 FAIL, 5 skip"), lines


def test_an_unknown_check_is_refused_naming_the_checks(tmp_path):
    r = smoke("--only", "environment,vllm_loar", out=tmp_path)
    assert r.returncode == 2 and "vllm_loar" in r.stderr and "self_explore_cluster" in r.stderr, r.stderr
