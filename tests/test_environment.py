"""Dataset loaders against the counts of shared/data/README.md, and the synthetic generator."""

from __future__ import annotations

import re

import pytest

from schoolroom.environment import DATASETS, DatasetNotFound, answers_match, load, synthetic, to_number

# dataset folder in the data README -> our loader name
README_DIRS = {"gsm8k": "gsm8k", "svamp": "svamp", "asdiv": "asdiv", "multiarith": "multiarith",
               "addsub": "addsub", "singleeq": "singleeq", "math": "math", "math500": "math500"}


def readme_counts(data_dir) -> dict[tuple[str, str], int]:
    """(dataset, split) -> record count, read from the table at the top of the data README."""
    counts = {}
    for line in (data_dir / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`([a-z0-9_]+)/`\s*\|[^|]*\|([^|]*)\|", line)
        if not m or m.group(1) not in README_DIRS:
            continue
        name, cell = README_DIRS[m.group(1)], m.group(2)
        pairs = re.findall(r"([a-z_]+) (\d+)", cell)
        if pairs:
            counts.update({(name, split): int(n) for split, n in pairs})
        else:
            counts[(name, "test")] = int(re.search(r"\d+", cell).group())
    return counts


def test_readme_table_was_read(data_dir):
    counts = readme_counts(data_dir)
    assert counts[("gsm8k", "train")] == 7473 and counts[("asdiv", "test")] == 2305
    assert {name for name, _ in counts} == set(DATASETS)


def test_every_loader_matches_the_readme_count(data_dir):
    for (name, split), n in readme_counts(data_dir).items():
        problems = load(name, split, data_dir=data_dir)
        assert len(problems) == n, (name, split)
        assert len({p.problem_id for p in problems}) == n, f"{name} ids are not unique"
        assert all(p.question.strip() and p.answer.strip() for p in problems), name


def test_gsm8k_steps_and_answers(data_dir):
    problems = load("gsm8k", "train", data_dir=data_dir)
    assert not any("<<" in s or ">>" in s for p in problems for s in p.gold_steps)
    assert all(p.gold_steps and to_number(p.answer) is not None for p in problems)
    first = problems[0]
    assert first.gold_steps == ("Natalia sold 48/2 = 24 clips in May.",
                                "Natalia sold 48+24 = 72 clips altogether in April and May.")
    assert first.answer == "72" and first.meta["gold_steps"] == 2
    socratic = load("gsm8k", "test_socratic", data_dir=data_dir, limit=5)
    assert not any(" ** " in s for p in socratic for s in p.gold_steps)


def test_limit_and_env_var(data_dir, monkeypatch):
    monkeypatch.setenv("SCHOOLROOM_DATA", str(data_dir))
    assert [p.problem_id for p in load("svamp", limit=3)] == ["svamp/chal-1", "svamp/chal-2", "svamp/chal-3"]


def test_math_answers_come_from_boxed(data_dir):
    problems = load("math", "test", data_dir=data_dir, limit=50)
    assert all(p.answer and "boxed" not in p.answer for p in problems)
    m500 = load("math500", "test", data_dir=data_dir)
    assert not any("[asy]" in s for p in m500 for s in p.gold_steps)
    assert m500[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetNotFound, match=rf"{re.escape(str(tmp_path))}.*gsm8k.*test.jsonl.*HF_HUB_OFFLINE"):
        load("gsm8k", "test", data_dir=tmp_path)
    with pytest.raises(KeyError, match="unknown dataset 'gsm9k'"):
        load("gsm9k")
    with pytest.raises(ValueError, match="splits train, test, test_socratic"):
        load("gsm8k", "dev", data_dir=tmp_path)


def _check_step(step: str) -> int:
    """Recompute the arithmetic in one gold step; return its result."""
    a, op, b, c = re.search(r"(\d+) ([-+*/]) (\d+) = (\d+)", step).groups()
    a, b, c = int(a), int(b), int(c)
    assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == c, step
    return c


@pytest.mark.parametrize("steps", range(1, 9))
def test_synthetic_problems_are_correct_and_chained(steps):
    for p in synthetic(25, steps=steps, seed=7):
        assert len(p.gold_steps) == steps == p.meta["gold_steps"]
        results = [_check_step(s) for s in p.gold_steps]
        assert str(results[-1]) == p.answer and int(p.answer) >= 0
        start = int(re.match(r"\w+ has (\d+)", p.question).group(1))
        operands = [int(re.search(r"(\d+) [-+*/]", s).group(1)) for s in p.gold_steps]
        assert operands == [start] + results[:-1], "each step must start from the previous result"
        assert p.question.count("Then") == steps


def _content(problems):
    return [(p.problem_id, p.question, p.gold_steps, p.answer) for p in problems]


def test_synthetic_is_seeded_and_mixes_difficulties():
    assert _content(synthetic(6, [1, 2, 3], seed=1)) == _content(synthetic(6, [1, 2, 3], seed=1))
    assert [p.question for p in synthetic(6, 2, seed=1)] != [p.question for p in synthetic(6, 2, seed=2)]
    assert [len(p.gold_steps) for p in synthetic(6, [1, 2, 3], seed=1)] == [1, 2, 3, 1, 2, 3]
    assert len({p.problem_id for p in synthetic(30, [2, 3], seed=0) + synthetic(30, [2, 3], seed=1)}) == 60
    with pytest.raises(ValueError):
        synthetic(1, 9)
    assert answers_match(synthetic(1, 1, seed=0)[0].answer + " apples", synthetic(1, 1, seed=0)[0].answer)
