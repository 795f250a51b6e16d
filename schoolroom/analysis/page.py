"""One self-contained HTML page to read a run: its report, a table of outcomes to filter, and every problem's
exchange in log order. It opens with no network (inline CSS and JS, plots as data URIs); every text from the log
is escaped (model output is untrusted)."""

from __future__ import annotations

import base64
import math
import mimetypes
import re
from html import escape, unescape
from pathlib import Path
from typing import TYPE_CHECKING

from schoolroom.messages import (Attempt, Guidance, Message, Mistake, PreferencePair, Problem, Rationale,
                                 StepRewards, Unknown, Verdict)

if TYPE_CHECKING:
    from schoolroom.analysis.run import Run

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
th{background:#f0f0f0}img{max-width:100%}h2{border-bottom:2px solid #ddd;margin-top:2em}
section{border:1px solid #ccc;border-radius:6px;padding:0 1em 1em;margin:1.5em 0}
.msg{border-left:4px solid #bbb;margin:.6em 0;padding:.2em .8em;background:#fafafa}
.head{color:#666;font-size:12px}.head b{color:#222;font-size:14px}
.attempt{border-color:#48c}.guidance{border-color:#a6c}.verdict{border-color:#888}.rationale{border-color:#c93}
.ok{color:#080;font-weight:bold}.bad{color:#c00;font-weight:bold}li.pit{background:#fcc}li.given{color:#777}
.tag{background:#c00;color:#fff;border-radius:3px;padding:0 4px;font-size:11px;margin-left:6px}
pre{white-space:pre-wrap;margin:.3em 0;font:13px/1.35 ui-monospace,monospace}
.bar{display:flex;gap:2px;margin:.3em 0}
.bar span{flex:1;text-align:center;padding:3px 0;font-size:11px;border-radius:2px}
.pair{display:flex;gap:1em}.pair>div{flex:1;padding:0 .5em}
.chosen{border:2px solid #6b6}.rejected{border:2px solid #d66}.filters select{margin-right:1em}
.scroll{max-height:32em;overflow:auto;display:inline-block}.scroll th{position:sticky;top:0}
"""
JS = """
function filt(){const s=[...document.querySelectorAll('.filters select')];let n=0;
for(const r of document.querySelectorAll('#outcomes tbody tr')){
r.hidden=s.some(x=>x.value!==''&&r.dataset[x.name]!==x.value);n+=!r.hidden}
document.getElementById('shown').textContent=n+' shown';}
"""


def _e(x) -> str:
    return escape(str(x))


def _steps(steps, pit=None, given: int = 0) -> str:
    """The steps as a list; ``pit`` (counted from 1) marked, the first ``given`` greyed."""
    items = []
    for i, s in enumerate(steps, 1):
        cls = "pit" if i == pit else "given" if i <= given else ""
        tag = '<span class="tag">first wrong step</span>' if i == pit else ""
        items.append(f'<li class="{cls}">{_e(s)}{tag}</li>')
    return f"<ol>{''.join(items)}</ol>"


def _colour(r) -> str:
    return "#ccc" if r is None else f"hsl({120 * max(0.0, min(1.0, r)):.0f},70%,60%)"  # red 0 .. green 1


def _rewards(m: StepRewards, attempt) -> str:
    steps = attempt.steps if isinstance(attempt, Attempt) else ()
    cells = []
    for i, r in enumerate(m.rewards):
        value = "–" if r is None else f"{r:.2f}"
        step = f" — {_e(steps[i])}" if i < len(steps) else ""
        cells.append(f'<span style="background:{_colour(r)}" title="step {i + 1}: {value}{step}">'
                     f"{i + 1}: {value}</span>")
    extra = [f"{k} {_e(v)}" for k, v in [("score", m.score), ("start", m.start), ("first pit: step",
             None if m.first_pit is None else m.first_pit + 1)] if v is not None]
    extra += [f"{m.rollouts} rollouts"] if m.rollouts else []
    on = f' on <a href="#m-{_e(m.attempt_id)}">{_e(m.attempt_id)}</a>'
    return f'<div>source {_e(m.source)}{on}; {", ".join(extra)}</div><div class="bar">{"".join(cells)}</div>'


def _body(run: Run, m: Message, pits: dict) -> str:
    if isinstance(m, Problem):
        return "<div>(posed again)</div>"
    if isinstance(m, Guidance):
        return (f"<div>{_e(m.kind)} from {_e(m.teacher)}, k={m.k}</div>" + _steps(m.steps)
                + (f"<pre>{_e(m.text)}</pre>" if m.text.strip() != "\n".join(m.steps).strip() else ""))
    if isinstance(m, Attempt):
        given = len([ln for ln in m.prefix.splitlines() if ln.strip()])
        adapter = f", adapter {_e(m.adapter)}" if m.adapter else ""
        return (f"<div>model {_e(m.model)}{adapter}, sample {m.sample}, answer <b>{_e(m.answer)}</b>"
                f"{f', {given} step(s) given' if given else ''}</div>" + _steps(m.steps, pits.get(m.id), given))
    if isinstance(m, Verdict):
        ok = '<span class="ok">correct</span>' if m.correct else '<span class="bad">wrong</span>'
        return (f'<div>{ok} on <a href="#m-{_e(m.attempt_id)}">{_e(m.attempt_id)}</a> ({_e(run.condition_of(m))}): '
                f"predicted {_e(m.predicted)} vs gold {_e(m.gold)}{(' — ' + _e(m.reason)) if m.reason else ''}</div>")
    if isinstance(m, Rationale):
        return f"<div>source {_e(m.source)}, answer {_e(m.answer)}</div><pre>{_e(m.text)}</pre>"
    if isinstance(m, Mistake):
        return (f'<div>on <a href="#m-{_e(m.attempt_id)}">{_e(m.attempt_id)}</a>: predicted {_e(m.predicted)} '
                f"vs gold {_e(m.gold)}</div><pre>{_e(m.text)}</pre>")
    if isinstance(m, StepRewards):
        return _rewards(m, run.by_id.get(m.attempt_id))
    if isinstance(m, PreferencePair):
        return (f"<div>{_e(m.level)} level{f', step {m.step + 1}' if m.step is not None else ''}</div>"
                + (f"<div>prefix:</div><pre>{_e(m.prefix)}</pre>" if m.prefix else "")
                + f'<div class="pair"><div class="chosen"><b>chosen</b><pre>{_e(m.chosen)}</pre></div>'
                f'<div class="rejected"><b>rejected</b><pre>{_e(m.rejected)}</pre></div></div>')
    fields = m.data if isinstance(m, Unknown) else {f: getattr(m, f) for f in m.__struct_fields__
                                                    if f not in Message.__struct_fields__ and f != "problem_id"}
    return "<div>" + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in fields.items()) + "</div>"


def _message(run: Run, m: Message, pits: dict) -> str:
    name = m.record_type if isinstance(m, Unknown) else type(m).__name__
    to = f" → {_e(m.recipient)}" if m.recipient else ""
    return (f'<div class="msg {_e(type(m).__name__.lower())}" id="m-{_e(m.id)}"><div class="head"><b>{_e(name)}</b> '
            f"{_e(m.sender)}{to} · round {m.round} · {_e(m.id)}</div>{_body(run, m, pits)}</div>")


def _report(report_dir: Path) -> str:
    path = report_dir / "report.md"
    if not path.is_file():
        return f"<p>No report.md in {_e(report_dir)}.</p>"
    import markdown

    md = markdown.Markdown(extensions=["tables"])
    md.preprocessors.deregister("html_block")  # raw HTML in the report shows as text
    md.inlinePatterns.deregister("html")
    out = md.convert(path.read_text())

    def inline(match):
        name = unescape(match.group(1))
        f = report_dir / name
        if "://" in name or not f.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(f.name)[0] or "image/png"
        return f'src="data:{mime};base64,{base64.b64encode(f.read_bytes()).decode()}"'

    out = re.sub(r'src="([^"]*)"', inline, out)
    out = re.sub(r"<(/?)h([1-5])>", lambda h: f"<{h[1]}h{int(h[2]) + 1}>", out)  # under the page's title
    return re.sub(r'\s(?:src|href)="https?://[^"]*"', "", out)  # nothing that would reach the network


def _pits(run: Run) -> dict[str, int]:
    """attempt id -> its first wrong step (counted from 1, as ``Run.first_pits``), where one is known."""
    return {r.attempt_id: int(r.pit) for r in run.first_pits().itertuples()
            if r.pit is not None and not math.isnan(r.pit)}


def _outcomes(run: Run, pits: dict[str, int]) -> str:
    df = run.outcomes()
    options = {"round": sorted(df["round"].unique()), "condition": sorted(df["condition"].unique()),
               "correct": ["correct", "wrong"]}
    selects = "".join(f'<label>{k} <select name="{k}" onchange="filt()"><option value="">all</option>'
                      + "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in vals) + "</select></label>"
                      for k, vals in options.items())
    rows = []
    for r in df.itertuples():
        p, verdict = pits.get(r.attempt_id), "correct" if r.correct else "wrong"
        p = "" if p is None else f"step {p}"
        rows.append(f'<tr data-round="{r.round}" data-condition="{_e(r.condition)}" data-correct="{verdict}">'
                    f"<td>{r.round}</td><td>{_e(r.condition)}</td>"
                    f'<td><a href="#p-{_e(r.problem_id)}">{_e(r.problem_id)}</a></td><td>{_e(r.gold_steps)}</td>'
                    f'<td class="{"ok" if r.correct else "bad"}">{verdict}</td><td>{p}</td></tr>')
    return (f'<div class="filters">{selects}<span id="shown">{len(rows)} shown</span></div>'
            '<div class="scroll"><table id="outcomes"><thead><tr><th>round</th><th>condition</th><th>problem</th>'
            f"<th>gold steps</th><th>verdict</th><th>first pit</th></tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table></div>")


def _exchanges(run: Run, pits: dict[str, int]) -> str:
    problems = {p.problem_id: p for p in run.problems()}
    about: dict[str, list[Message]] = {}
    for m in run.messages:
        pid = getattr(m, "problem_id", None)
        if isinstance(pid, str):
            about.setdefault(pid, []).append(m)
    out = []
    for pid, msgs in about.items():
        p = problems.get(pid)
        head = (f"<p><b>Question.</b> {_e(p.question)}</p><div>Gold steps (answer <b>{_e(p.answer)}</b>):</div>"
                + _steps(p.gold_steps)) if p is not None else "<p>(no Problem message for this id)</p>"
        body = "".join(_message(run, m, pits) for m in msgs if m is not p)
        out.append(f'<section id="p-{_e(pid)}"><h3>{_e(pid)}</h3>{head}{body}</section>')
    return "".join(out)


def page(run: Run, report_dir: Path | None = None) -> str:
    """The HTML text of the page for ``run``; the report (report.md and its plots) from ``report_dir``
    (default: the run directory)."""
    report_dir = Path(report_dir) if report_dir is not None else run.dir
    title, pits = _e(run.run_id), _pits(run)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style>'
            f"<script>{JS}</script></head><body><h1>{title}</h1>{_report(report_dir)}"
            f"<h2>Problems</h2>{_outcomes(run, pits)}<h2>Exchanges</h2>{_exchanges(run, pits)}</body></html>")


def write_page(run: Run, out: str | Path, report_dir: Path | None = None) -> Path:
    """Write the page for ``run`` to ``out``; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(run, report_dir), encoding="utf-8")
    return out
