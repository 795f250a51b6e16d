"""docs/results.md from the runs' own logs: one row per paper, each claim a paired difference with its interval.

    .venv/bin/python scripts/results.py [--runs runs/ ...] [--claims docs/results.toml] [--out docs/results.md]

``docs/results.toml`` lists, per paper, its headline, the experiment config, the exact command, and the claims:
two conditions (the names of the run's EvalReports, as ``schoolroom replay`` lists them) whose per-problem outcomes
are paired, and the direction the paper found. The run read is the newest directory in the ``--runs`` folders whose
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


def newest_run(runs: list[Path], name: str) -> Path | None:
    found = []
    for d in (d for folder in runs for d in folder.glob(f"{name}-*")):
        if (d / "metrics.json").exists() and (d / "config.toml").exists():
            run = tomllib.loads((d / "config.toml").read_text()).get("run", {})
            if run.get("name") == name:
                found.append(d)
    return max(found, key=lambda d: (d / "metrics.json").stat().st_mtime, default=None)


def outcomes(run: Run, condition: str) -> dict[str, bool] | None:
    """problem -> correct for the EvalReport named ``condition`` (its last round when it has several); None when the
    run has none of that name."""
    rounds = {r: by for (r, name), by in run.reported().items() if name == condition}
    return rounds[max(rounds)] if rounds else None


def claim_cell(run: Run, claim: dict, seed: int) -> tuple[str, str]:
    """The claim's measured difference (points, paired 95% interval) and whether its direction matches."""
    base, treat = outcomes(run, claim["baseline"]), outcomes(run, claim["treatment"])
    if base is None or treat is None:
        missing = claim["baseline"] if base is None else claim["treatment"]
        known = ", ".join(sorted({name for _, name in run.reported()}))
        return f"{claim['label']}: this run has no condition {missing!r} (it has {known})", "not measured"
    ids = [i for i in base if i in treat]  # in the run's order: the same bootstrap as its report
    d = difference([base[i] for i in ids], [treat[i] for i in ids], seed)
    acc = f"{100 * sum(base[i] for i in ids) / len(ids):.1f}% → {100 * sum(treat[i] for i in ids) / len(ids):.1f}%"
    text = f"{claim['label']}: {acc}, {100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] (n = {len(ids)})"
    if claim.get("expect", "higher") == "none":
        return text, "(measured; the paper claims no direction)"
    sign = 1 if claim.get("expect", "higher") == "higher" else -1
    if significant(d, sign):
        verdict = "yes"
    elif significant(d, -sign):
        verdict = "no: the opposite, significantly"
    else:
        verdict = "not significant" + (" (same sign)" if sign * d.mean > 0 else " (opposite sign)" if d.mean else "")
    return text, verdict


def significant(d, sign: int) -> bool:
    return (d.low > 0) if sign > 0 else (d.high < 0)


def row(paper: dict, runs: list[Path]) -> list[str]:
    found = newest_run(runs, paper["run"])
    command = f"`{paper['command']}`"
    if not (ROOT / paper["config"]).exists():
        return [paper["paper"], paper["headline"], f"no configuration yet (`{paper['config']}`)", "not run yet", "—",
                "—"]
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
    ap.add_argument("--runs", action="append", help="a folder runs are in (repeatable; default: runs/)")
    ap.add_argument("--claims", default=str(ROOT / "docs" / "results.toml"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args(argv)
    spec = tomllib.loads(Path(args.claims).read_text())
    rows = [row(p, [Path(r) for r in args.runs or [ROOT / "runs"]]) for p in spec["paper"]]
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
