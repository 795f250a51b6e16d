"""Human step labels in the PRM800K "stepwise critique" layout, as attempts with labelled steps.

The layout (``shared/data/prm800k_phase1_test_stepwise_critique_derived/``): one row per rated step, with
``instruction`` (the problem), ``responses`` (the steps before it), ``next_response`` (the rated step),
``rating`` (1 good, 0 neutral, -1 bad; null for a step a labeller wrote) and ``is_human_response``. Read
from Parquet (``.parquet``) or JSON lines (``.jsonl``); a folder means every such file in it.

Each path of rated steps becomes a solution: its steps and one label per step, 1.0 (correct) or 0.0
(wrong), None where no rating is known. Paths that are the start of a longer path are left out: the longer
one holds their labels. ``neutral`` says what a 0 rating means: ``positive`` (the usual choice, e.g.
OpenR's), ``negative``, or ``skip`` (unlabelled); a step a labeller wrote is correct.

``split_by_problem`` holds whole problems out (seeded) to check a reward model on labels it never saw;
``rated_steps`` lists every labelled step once.
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


def load_prm800k(path: str | Path, neutral: str = "positive", limit: int | None = None, unique: bool = False
                 ) -> list[tuple[Problem, Attempt, StepRewards]]:
    """(problem, solution, its human step labels) for every maximal path of rated steps in ``path`` (the solutions
    of one problem share its Problem message).

    ``unique``: each rated step labelled once, in the first solution that reaches it, and None (unlabelled) in the
    others. The solutions of a problem share their early steps (the path branches at every step a labeller rated
    alternatives for), so without it a shared step counts in a reward model's loss once per solution through it:
    in PRM800K phase 1 a step rated correct is in 15 solutions on average, a step rated wrong in one (each ends
    its solution): 96.5% of the labels read are positive, against 64.8% of the rated steps."""
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
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for q, steps in sorted(paths - starts):
        pid = "prm800k/" + hashlib.sha256(q.encode()).hexdigest()[:12]
        problem = problems.setdefault(q, Problem(problem_id=pid, dataset="prm800k", question=q, sender="environment"))
        step_labels = tuple(None if unique and (q, steps[: i + 1]) in seen else labels.get((q, steps[:i], s))
                            for i, s in enumerate(steps))
        seen.update((q, steps[: i + 1]) for i in range(len(steps)))
        attempt = Attempt(problem_id=pid, text="\n".join(steps), steps=steps, model="prm800k", sender="environment",
                          parents=(problem.id,))
        rewards = StepRewards(problem_id=pid, attempt_id=attempt.id, rewards=step_labels, source="human",
                              sender="environment", parents=(attempt.id, problem.id))
        out.append((problem, attempt, rewards))
        if limit is not None and len(out) >= limit:
            break
    return out


def split_by_problem(rows: list[tuple[Problem, Attempt, StepRewards]], heldout: float, seed: int = 0
                     ) -> tuple[list[tuple[Problem, Attempt, StepRewards]], list[tuple[Problem, Attempt, StepRewards]]]:
    """(train, held out): the solutions of a share ``heldout`` of the problems held out whole, so a reward model
    trained on the first part is checked on problems it never saw. The problems are ordered by the hash of
    ``seed`` and their question (the same split on every machine, whatever order the rows come in); the first
    ``round(heldout * problems)`` are held out, at least one when ``heldout > 0``, never all."""
    if not 0 <= heldout < 1:
        raise ValueError(f"the held-out share is in [0, 1), not {heldout}")
    questions = sorted({p.question for p, _, _ in rows},
                       key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    n = min(len(questions) - 1, max(1, round(heldout * len(questions)))) if heldout > 0 and len(questions) > 1 else 0
    held = set(questions[:n])
    return [x for x in rows if x[0].question not in held], [x for x in rows if x[0].question in held]


def rated_steps(rows: list[tuple[Problem, Attempt, StepRewards]]) -> dict[tuple[str, tuple[str, ...]], float]:
    """Every labelled step once: (question, the steps up to and including it) -> its label."""
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for problem, attempt, rewards in rows:
        for i, y in enumerate(rewards.rewards):
            if y is not None:
                out.setdefault((problem.question, attempt.steps[: i + 1]), y)
    return out
