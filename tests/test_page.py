"""The run's HTML page: a real tiny run, the page written, then read back by real headless Chromium."""

from __future__ import annotations

import re
import subprocess
import tempfile
from html import escape
from pathlib import Path

import pytest

from schoolroom.analysis.page import write_page
from schoolroom.analysis.run import Run

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def written(tiny_run, tmp_path_factory):
    run = Run(tiny_run)
    return run, write_page(run, tmp_path_factory.mktemp("page") / "page.html")


def chromium(*args: str) -> str:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (scripts/setup.sh test installs it)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_is_self_contained(written):
    run, path = written
    text = path.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*https?://""", text, re.IGNORECASE)
    assert re.search(r'<img [^>]*src="data:image/png;base64,', text)  # the report's plot, inline
    assert (run.dir / "report.md").read_text().splitlines()[0].lstrip("# ") in text


def test_chromium_shows_problems_and_verdicts(written):
    run, path = written
    dom = chromium("--dump-dom", path.as_uri())
    problem = run.problems()[0]
    assert escape(problem.question, quote=False) in dom
    section = dom.split(f'<section id="p-{escape(problem.problem_id)}"', 1)[1].split("</section>", 1)[0]
    verdicts = [m for m in run.messages if type(m).__name__ == "Verdict" and m.problem_id == problem.problem_id]
    assert verdicts
    for v in verdicts:
        assert f"{'correct' if v.correct else 'wrong'}</span> on" in section
        assert f"predicted {escape(str(v.predicted), quote=False)} vs gold {escape(v.gold, quote=False)}" in section
    for name in ("round", "condition", "correct"):
        assert f'<select name="{name}"' in dom
    assert dom.count('<tr data-round="') == len(run.outcomes())


def test_filter_hides_rows(written):
    run, path = written
    wrong = int((~run.outcomes()["correct"].astype(bool)).sum())
    for choice, shown in (("wrong", wrong), ("correct", len(run.outcomes()) - wrong)):
        probe = path.with_name(f"filter-{choice}.html")  # the page, with the select set and the filter run
        probe.write_text(path.read_text().replace("</body>", "<script>document.querySelector('select[name=correct]')"
                                                             f".value='{choice}';filt()</script></body>"))
        dom = chromium("--dump-dom", probe.as_uri())
        assert f"{shown} shown" in dom
        assert len(re.findall(r'<tr [^>]*data-correct="[a-z]+" hidden', dom)) == len(run.outcomes()) - shown


def test_screenshot_is_not_blank(written):
    _, path = written
    from PIL import Image

    png = path.with_suffix(".png")
    chromium(f"--screenshot={png}", "--window-size=1200,1600", "--hide-scrollbars", path.as_uri())
    with Image.open(png) as im:
        assert im.size == (1200, 1600)
        rgb = im.convert("RGB")
        assert any(lo != hi for lo, hi in rgb.getextrema())
        assert len(rgb.getcolors(1 << 24)) > 50  # text, tables and the plot: many colours, not a blank page
