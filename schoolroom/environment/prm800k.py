"""Human step labels in the PRM800K "stepwise critique" layout, as attempts with labelled steps.

The layout (``shared/data/prm800k_phase1_test_stepwise_critique_derived/``): one row per rated step, with
``instruction`` (the problem), ``responses`` (the steps before it), ``next_response`` (the rated step),
``rating`` (1 good, 0 neutral, -1 bad; null for a step a labeller wrote) and ``is_human_response``. Read
from Parquet (``.parquet``) or JSON lines (``.jsonl``); a folder means every such file in it.

Each path of rated steps becomes a solution: its steps and one label per step, 1.0 (correct) or 0.0
(wrong), None where no rating is known. Paths that are the start of a longer path are left out: the longer
one holds their labels. ``neutral`` says what a 0 rating means: ``positive`` (the usual choice, e.g.
OpenR's), ``negative``, or ``skip`` (unlabelled); a step a labeller wrote is correct.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from schoolroom.messages import Attempt, Problem, StepRewards


def _rows(path: Path) -> list[dict]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .parquet or .jsonl file in {path}")
    rows = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(f).to_pylist()
        else:
            with open(f, encoding="utf-8") as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
    missing = {"instruction", "responses", "next_response", "rating"} - set(rows[0]) if rows else set()
    if missing:
        raise ValueError(f"{path}: not the PRM800K stepwise layout, no {', '.join(sorted(missing))} field")
    return rows


def _label(row: dict, neutral: str) -> float | None:
    if row.get("is_human_response") and row.get("rating") is None:
        return 1.0
    rating = row.get("rating")
    if rating is None:
        return None
    if rating == 0:
        return {"positive": 1.0, "negative": 0.0, "skip": None}[neutral]
    return 1.0 if rating > 0 else 0.0


def load_prm800k(path: str | Path, neutral: str = "positive", limit: int | None = None
                 ) -> list[tuple[Problem, Attempt, StepRewards]]:
    """(problem, solution, its human step labels) for every maximal path of rated steps in ``path`` (the solutions
    of one problem share its Problem message)."""
    if neutral not in ("positive", "negative", "skip"):
        raise ValueError(f"neutral must be positive, negative or skip, not {neutral!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no PRM800K-layout data at {path}")
    rows = _rows(path)
    labels = {(r["instruction"], tuple(r["responses"] or ()), r["next_response"]): _label(r, neutral) for r in rows}
    paths = {(q, prior + (step,)) for q, prior, step in labels}
    starts = {(q, steps[:i]) for q, steps in paths for i in range(1, len(steps))}
    out: list[tuple[Problem, Attempt, StepRewards]] = []
    problems: dict[str, Problem] = {}
    for q, steps in sorted(paths - starts):
        pid = "prm800k/" + hashlib.sha256(q.encode()).hexdigest()[:12]
        problem = problems.setdefault(q, Problem(problem_id=pid, dataset="prm800k", question=q, sender="environment"))
        step_labels = tuple(labels.get((q, steps[:i], s)) for i, s in enumerate(steps))
        attempt = Attempt(problem_id=pid, text="\n".join(steps), steps=steps, model="prm800k", sender="environment",
                          parents=(problem.id,))
        rewards = StepRewards(problem_id=pid, attempt_id=attempt.id, rewards=step_labels, source="human",
                              sender="environment", parents=(attempt.id, problem.id))
        out.append((problem, attempt, rewards))
        if limit is not None and len(out) >= limit:
            break
    return out
