"""One condition, one label: the page, ``Run.outcomes``, ``first_pits`` and ``table("attempts")`` all name an
attempt's condition after the EvalReport of its verdict; and a protocol file built on ``compare()`` alone (the
README's way) reaches ``Run.accuracy()``."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from conftest import replays_alike, tiny_config

from schoolroom import config as configlib
from schoolroom import log
from schoolroom.analysis.page import page
from schoolroom.analysis.run import Run
from schoolroom.classroom import runner
from schoolroom.messages import EvalReport
from schoolroom.reporting.report import compare

pytestmark = pytest.mark.slow

FIRST_STEP = ["first_step/reference/k=0", "first_step/reference/k=1"]


def test_every_attempt_of_a_condition_carries_its_name(tiny_run):
    """3 problems of 1, 2 and 3 gold steps, k in (0, 1): the 1-step problem is set aside from the comparison,
    and its attempts still belong to their condition."""
    run = Run(tiny_run)
    assert list(run.accuracy()["condition"]) == FIRST_STEP
    attempts = run.table("attempts")
    assert Counter(attempts["condition"]) == {name: 3 for name in FIRST_STEP}
    label = dict(zip(attempts["id"], attempts["condition"]))
    outcomes = run.outcomes()
    assert set(outcomes["gold_steps"]) == {1, 2, 3} and not outcomes["reported"].all(), "one problem set aside"
    assert [label[a] for a in outcomes["attempt_id"]] == list(outcomes["condition"])
    pits = run.first_pits()
    assert [label[a] for a in pits["attempt_id"]] == list(pits["condition"])
    verdicts = run.table("verdicts")
    assert [label[a] for a in verdicts["attempt_id"]] == list(verdicts["condition"])
    html = page(run)
    rows = re.findall(r'<tr data-round="\d+" data-condition="([^"]*)"', html)
    assert Counter(rows) == Counter(attempts["condition"]), "filtering the page by a condition shows all of it"
    said = re.findall(r'</a> \(([^)]*)\): predicted', html)  # each verdict in the exchanges names its condition
    assert Counter(said) == Counter(attempts["condition"])


def test_pits_count_steps_from_one_on_the_page_and_in_run(tiny_run):
    run = Run(tiny_run)
    pits = run.first_pits()
    located = pits.dropna(subset=["pit"])
    assert len(located) and located["pit"].min() >= 1
    html = page(run)
    shown = re.findall(r'<td class="(?:ok|bad)">\w+</td><td>([^<]*)</td></tr>', html)
    at = dict(zip(located["attempt_id"], located["pit"].astype(int)))
    assert shown == [f"step {at[a]}" if a in at else "" for a in run.outcomes()["attempt_id"]]
    summary = run.pits().set_index(["round", "gold_steps"])
    for (rnd, steps), group in located.groupby(["round", "gold_steps"]):
        assert summary.loc[(rnd, steps), "mean_step"] == pytest.approx(group["pit"].mean())
        assert summary.loc[(rnd, steps), "at_step_1"] == (group["pit"] == 1).sum()
    for a, p in at.items():  # the exchange marks the same step
        steps = re.search(rf'id="m-{a}".*?<ol>(.*?)</ol>', html, re.S).group(1)
        assert re.findall(r"<li[^>]*>", steps).index('<li class="pit">') + 1 == p


def test_the_report_counts_in_words(tiny_run):
    report = (tiny_run / "report.md").read_text()
    assert "guidance of 1 step would" in report and "1 problem with 1 or fewer gold steps is set aside" in report
    assert not re.search(r"\b1 (gold )?steps\b|\b1 problems\b", report), report


def test_a_figure_title_says_the_number_of_problems_once():
    _, _, fig = compare({"a": [True, False] * 4}, "a", title="Accuracy on all 8 problems")
    assert fig.title == "Accuracy on all 8 problems"
    assert compare({"a": [True, False] * 4}, "a")[2].title == "Held-out accuracy (8 problems)"


HINT = '''
import msgspec

from schoolroom.api import Classroom, Report, compare, protocol


class HintSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    problems: str = "eval"
    evaluate: bool = False  # the unguided accuracy from room.evaluate (which logs its own EvalReport)


@protocol("hint", HintSettings)
def hint(room: Classroom, cfg: HintSettings) -> Report:
    problems = room.problems(cfg.problems)
    if cfg.evaluate:
        alone = room.evaluate("alone", problems)
    else:
        alone = room.verifier.check(room.student.solve(problems), problems)
    guidance = room.teacher.guide(problems, 1)
    hinted = room.verifier.check(room.student.solve(problems, guidance), problems)
    either = [a.correct or b.correct for a, b in zip(alone, hinted)]  # bools: reported with no verdicts
    table, metrics, fig = compare({"alone": alone, "first step given": hinted, "either": either}, "alone")
    return Report(title="Hint", lines=[f"{len(problems)} problems."], tables=[table], figures=[fig],
                  metrics={"accuracy": metrics})
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hint")
    (folder / "hint.py").write_text(HINT)
    return folder


def run_hint(lab, name: str, **overrides):
    raw = tiny_config(n=2, max_tokens=16)
    raw["protocol"] = {"name": "hint", "file": "hint.py", **overrides.pop("protocol", {})}
    raw["runtime"] |= overrides
    path = lab / f"{name}.toml"
    path.write_text(configlib.dump(raw))
    return runner.run(configlib.load(path)[0], source=str(path), out=str(lab / name))


def test_a_protocol_built_on_compare_reaches_run_accuracy(lab):
    run_dir = run_hint(lab, "compare_only")
    run = Run(run_dir)
    acc = run.accuracy()
    assert list(acc["condition"]) == ["alone", "first step given", "either"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["accuracy"]
    assert list(acc["correct"]) == [metrics[c]["correct"] for c in acc["condition"]] and set(acc["n"]) == {2}
    reports = {m.name: m for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, EvalReport)}
    assert len(reports["alone"].verdicts) == 2 and reports["either"].verdicts == ()
    attempts = run.table("attempts")
    assert Counter(attempts["condition"]) == {"alone": 2, "first step given": 2}
    replays_alike(run_dir)  # the replayed protocol makes the same EvalReports: same report and metrics


def test_verdicts_room_evaluate_reported_are_not_reported_again(lab, ray_local):
    run_dir = run_hint(lab, "evaluated", address="local", protocol={"evaluate": True})
    names = [m.name for m in log.read_all(run_dir / "messages.jsonl") if isinstance(m, EvalReport)]
    assert names == ["alone", "first step given", "either"]
    replays_alike(run_dir)
