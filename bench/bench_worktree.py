"""A commit of this repository checked out beside it (a git worktree under the system's temp folder, made once),
for a benchmark's before/after in one run: the old code runs from there, in its own process."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worktree(commit: str) -> Path:
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"schoolroom-{sha[:12]}"
    if not (path / "schoolroom").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), sha], check=True,
                       capture_output=True)
    return path
