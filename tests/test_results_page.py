"""scripts/results.py: docs/results.md's rows come from the runs' own logs, with paired intervals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from schoolroom import log
from schoolroom.messages import EvalReport
from schoolroom.reporting.report import difference

ROOT = Path(__file__).resolve().parents[1]


def results_script():
    spec = importlib.util.spec_from_file_location("results", ROOT / "scripts" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLAIMS = """
title = "# Results"
intro = "From the logs."
[[paper]]
paper = "First-Step Advantage"
headline = "first-step guidance helps"
run = "tiny"
config = "experiments/quickstart.toml"
command = "schoolroom run tiny.toml"
claims = [{ label = "k=1 vs k=0", baseline = "first_step/reference/k=0", treatment = "first_step/reference/k=1" }]
[[paper]]
paper = "Not run"
headline = "something"
run = "never"
config = "experiments/quickstart.toml"
command = "schoolroom run none.toml"
claims = []
"""


def test_the_page_reads_each_claim_from_the_run_log(tiny_run, tmp_path):
    claims = tmp_path / "claims.toml"
    claims.write_text(CLAIMS)
    out = tmp_path / "results.md"
    assert results_script().main(["--runs", str(tiny_run.parent), "--claims", str(claims), "--out", str(out)]) == 0
    page = out.read_text()
    messages = log.read_all(tiny_run / "messages.jsonl")
    reports = {m.name: m for m in messages if isinstance(m, EvalReport)}
    by_id = {m.id: m for m in messages}
    base, treat = ([by_id[v].correct for v in reports[f"first_step/reference/k={k}"].verdicts] for k in (0, 1))
    d = difference(base, treat, 0)
    row = next(ln for ln in page.splitlines() if ln.startswith("| First-Step Advantage"))
    assert f"{100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] (n = {len(base)})" in row
    wall = json.loads((tiny_run / "metrics.json").read_text())["wall_s"]
    assert f"{wall / 60:.0f} min" in row and tiny_run.name in row
    assert "| Not run | something | `schoolroom run none.toml` | not run yet |" in page


def test_a_claim_naming_no_condition_of_the_run_says_which_it_has(tiny_run, tmp_path):
    claims = tmp_path / "claims.toml"
    claims.write_text(CLAIMS.replace('treatment = "first_step/reference/k=1"', 'treatment = "k=7"'))
    out = tmp_path / "r.md"
    results_script().main(["--runs", str(tiny_run.parent), "--claims", str(claims), "--out", str(out)])
    row = next(ln for ln in out.read_text().splitlines() if ln.startswith("| First-Step Advantage"))
    assert "this run has no condition 'k=7' (it has first_step/reference/k=0, first_step/reference/k=1)" in row
    assert row.endswith("| not measured |")


class Logged:
    """What claim_cell reads of a run: its EvalReports' per-problem outcomes by (round, name)."""

    def __init__(self, reported: dict):
        self._reported = reported

    def reported(self) -> dict:
        return self._reported


def test_a_claim_is_treatment_minus_baseline_and_its_direction_is_judged_by_the_interval():
    ids = [f"p{i}" for i in range(20)]
    run = Logged({(0, "before"): {p: i < 4 for i, p in enumerate(ids)},  # 4 of 20
                  (0, "after"): {p: i < 16 for i, p in enumerate(ids)},  # 16 of 20
                  (1, "after"): {p: i < 18 for i, p in enumerate(ids)}})  # the last round is the one read
    text, verdict = results_script().claim_cell(run, {"label": "x", "baseline": "before", "treatment": "after"}, 0)
    assert text.startswith("x: 20.0% → 90.0%, +70.0 [") and text.endswith("(n = 20)") and verdict == "yes"
    _, verdict = results_script().claim_cell(run, {"label": "x", "baseline": "before", "treatment": "after",
                                                   "expect": "lower"}, 0)
    assert verdict == "no: the opposite, significantly"
    _, verdict = results_script().claim_cell(run, {"label": "x", "baseline": "after", "treatment": "after"}, 0)
    assert verdict == "not significant"
    _, verdict = results_script().claim_cell(run, {"label": "x", "baseline": "before", "treatment": "after",
                                                   "expect": "none"}, 0)
    assert verdict == "(measured; the paper claims no direction)"
