"""docs/results.md from the runs' own logs: one row per paper, each claim a paired difference with its interval.

    .venv/bin/python scripts/results.py [--runs runs/] [--claims docs/results.toml] [--out docs/results.md]

``docs/results.toml`` lists, per paper, its headline, the experiment config, the exact command, and the claims:
two conditions (the names of the run's EvalReports, as ``schoolroom replay`` lists them) whose per-problem outcomes
are paired, and the direction the paper found. The run read is the newest directory under ``--runs`` whose
``config.toml`` names that run; its ``metrics.json`` gives the wall time. A paper with no run says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from schoolroom.analysis import Run
from schoolroom.reporting.report import difference

ROOT = Path(__file__).resolve().parents[1]


def newest_run(runs: Path, name: str) -> Path | None:
    found = []
    for d in runs.glob(f"{name}-*"):
        if (d / "metrics.json").exists() and (d / "config.toml").exists():
            run = tomllib.loads((d / "config.toml").read_text()).get("run", {})
            if run.get("name") == name:
                found.append(d)
    return max(found, key=lambda d: (d / "metrics.json").stat().st_mtime, default=None)


def outcomes(run: Run, condition: str) -> dict[str, bool]:
    """problem -> correct for the EvalReport named ``condition`` (its last round when it has several)."""
    rounds = {r: by for (r, name), by in run.reported().items() if name == condition}
    if not rounds:
        known = sorted({name for _, name in run.reported()})
        raise SystemExit(f"{run.dir}: no EvalReport named {condition!r}; the run has: {', '.join(known)}")
    return rounds[max(rounds)]


def claim_cell(run: Run, claim: dict, seed: int) -> tuple[str, str]:
    """The claim's measured difference (points, paired 95% interval) and whether its direction matches."""
    base, treat = outcomes(run, claim["baseline"]), outcomes(run, claim["treatment"])
    ids = sorted(set(base) & set(treat))
    d = difference([base[i] for i in ids], [treat[i] for i in ids], seed)
    acc = f"{100 * sum(base[i] for i in ids) / len(ids):.1f}% → {100 * sum(treat[i] for i in ids) / len(ids):.1f}%"
    text = f"{claim['label']}: {acc}, {100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] (n = {len(ids)})"
    sign = 1 if claim.get("expect", "higher") == "higher" else -1
    if significant(d, sign):
        verdict = "yes"
    elif significant(d, -sign):
        verdict = "no: the opposite, significantly"
    else:
        verdict = "not significant" + (" (same sign)" if sign * d.mean > 0 else " (opposite sign)")
    return text, verdict


def significant(d, sign: int) -> bool:
    return (d.low > 0) if sign > 0 else (d.high < 0)


def row(paper: dict, runs: Path) -> list[str]:
    found = newest_run(runs, paper["run"])
    command = f"`{paper['command']}`"
    if found is None:
        return [paper["paper"], paper["headline"], command, "not run yet", "—", "—"]
    run = Run(found)
    seed = tomllib.loads((found / "config.toml").read_text())["run"].get("seed", 0)
    cells = [claim_cell(run, c, seed) for c in paper["claims"]]
    wall = json.loads((found / "metrics.json").read_text()).get("wall_s")
    return [paper["paper"], paper["headline"], command + f" (run `{found.name}`)",
            "<br>".join(text for text, _ in cells), f"{wall / 60:.0f} min" if wall is not None else "not measured",
            "<br>".join(v for _, v in cells)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="the folder the runs are in")
    ap.add_argument("--claims", default=str(ROOT / "docs" / "results.toml"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args(argv)
    spec = tomllib.loads(Path(args.claims).read_text())
    rows = [row(p, Path(args.runs)) for p in spec["paper"]]
    head = ["paper", "headline", "configuration and command", "this framework (paired 95% interval, points)",
            "wall time (2 CPU cores)", "direction as the paper's"]
    lines = [spec["title"], "", *spec["intro"].strip().splitlines(), "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    lines += ["", *spec.get("notes", "").strip().splitlines()]
    Path(args.out).write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}: {sum(r[3] != 'not run yet' for r in rows)} of {len(rows)} papers with a run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
