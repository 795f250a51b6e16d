"""The example protocols in examples/, written the way a user writes one (a file beside its config), run end to
end on a few problems with the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import replays_alike

from schoolroom import cli, log, plugins
from schoolroom.environment import synthetic
from schoolroom.messages import Attempt, Guidance

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, tmp_path: Path, limit: int, *overrides: str) -> Path:
    sets = [x for o in ("runtime.address=inline", *overrides) for x in ("--set", o)]
    assert cli.main(["run", str(EXAMPLES / f"{name}.toml"), "--limit", str(limit), "--out", str(tmp_path), *sets]) == 0
    return next(tmp_path.glob(f"{name}-*"))


def test_examples_are_short():
    for name in ("pit_tutoring", "peer_review"):
        assert len((EXAMPLES / f"{name}.py").read_text().splitlines()) < 100, name


def test_gold_pit_is_the_first_step_whose_result_is_not_a_gold_number():
    pit = plugins.load(f"file:{EXAMPLES / 'pit_tutoring.py'}")
    problem = synthetic(1, steps=[3], seed=4)[0]
    good = problem.gold_steps
    bad = Attempt(problem_id=problem.problem_id, text="", steps=(good[0], "So it is 7 + 5 = 999.", good[2], "#### 1"))
    assert pit.gold_pit(problem, bad) == 1
    assert pit.gold_pit(problem, Attempt(problem_id="p", text="", steps=(*good, "#### 1"))) == 3  # the answer line


@pytest.mark.slow
def test_pit_tutoring_runs_from_its_file(tmp_path):
    run_dir = run_example("pit_tutoring", tmp_path, 3, "agents.student.max_tokens=40", "protocol.step_tokens=16")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    wrong = metrics["first_try"]["n"] - metrics["first_try"]["correct"]
    assert wrong > 0 and set(metrics["accuracy"]) == {"first_step", "at_pit"}
    tokens = metrics["tutor_tokens"]
    assert 0 < tokens["at_pit"] <= 16 * wrong and 0 < tokens["first_step"] <= 2 * 16 * wrong
    messages = log.read_all(run_dir / "messages.jsonl")  # the file was loaded by the run: its type reads typed
    steps = [m for m in messages if type(m).__name__ == "TutorStep"]
    assert len(steps) >= 2 * wrong and all(isinstance(s, Guidance) for s in steps)
    attempts = {m.problem_id: m for m in messages if isinstance(m, Attempt) and not m.prefix}
    for s, pit in zip(steps[:wrong], metrics["pits"]):  # at the pit: the student's own steps, then the tutor's
        assert s.steps[:-1] == attempts[s.problem_id].steps[:pit] and len(s.steps) == pit + 1
    first = {}  # first steps: each step continues the tutor's own steps of that problem
    for s in steps[wrong:]:
        assert s.steps[:-1] == first.get(s.problem_id, ())
        first[s.problem_id] = s.steps
    assert sum(s.tokens for s in steps[wrong:]) == tokens["first_step"]
    assert "Retried accuracy" in (run_dir / "report.md").read_text()
    replays_alike(run_dir)


@pytest.mark.slow
def test_peer_review_runs_two_students_and_no_teacher(tmp_path):
    run_dir = run_example("peer_review", tmp_path, 2, "agents.alice.max_tokens=32", "agents.bob.max_tokens=32")
    messages = log.read_all(run_dir / "messages.jsonl")
    first = [m for m in messages if isinstance(m, Attempt) and len(m.parents) == 1]
    reviews = [m for m in messages if isinstance(m, Attempt) and len(m.parents) == 3]
    assert {m.sender for m in first} == {m.sender for m in reviews} == {"alice", "bob"} and len(reviews) == 4
    by_id = {m.id: m for m in first}
    assert all({by_id[p].sender for p in r.parents[1:]} == {"alice", "bob"} for r in reviews)
    accuracy = json.loads((run_dir / "metrics.json").read_text())["accuracy"]
    assert set(accuracy) == {"alice alone", "bob alone", "alice after review", "bob after review"}
    replays_alike(run_dir)
