"""scripts/setup.sh gpu checks the NVIDIA driver before it makes or downloads anything: a missing or too old driver
is one line and exit 1, with no .venv made. The driver is played by an ``nvidia-smi`` script on PATH (this machine
has none); what a good driver leads to, pip's resolve of the GPU path, is shown with DRY_RUN=1 in the README."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def setup_gpu(tmp_path: Path, smi: str | None) -> subprocess.CompletedProcess:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    if smi is not None:
        (bin_ / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
        (bin_ / "nvidia-smi").chmod(0o755)
    path = [str(bin_)] + [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()]
    return subprocess.run(["bash", str(checkout / "scripts" / "setup.sh"), "gpu"], capture_output=True, text=True,
                          timeout=60, env=os.environ | {"PATH": os.pathsep.join(path)})


@pytest.mark.parametrize("smi,line", [
    ("echo 535.104.05", "setup gpu: NVIDIA driver 535.104.05 is older than 580, which torch 2.14.0 (CUDA 13.0, as "
                        "vLLM 0.33 pins it) needs: update the driver"),
    ("exit 9", "setup gpu: no NVIDIA driver answers here (nvidia-smi): install driver >= 580, or set up for the CPU "
               "with scripts/setup.sh"),
    (None, "setup gpu: no NVIDIA driver answers here (nvidia-smi)"),
    ("echo N/A", "setup gpu: nvidia-smi gave the driver version as 'N/A', which is not a number"),
])
def test_the_driver_is_checked_first_in_one_line(tmp_path, smi, line):
    r = setup_gpu(tmp_path, smi)
    assert r.returncode == 1 and r.stderr.startswith(line) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "checkout" / ".venv").exists(), "nothing is made before the driver is checked"
