"""A run, read back for analysis in a notebook: ``Run("runs/...")``.

Everything here is computed from the run's message log alone (and its config, for the protocol's own message
types): typed messages, a DataFrame per message type, transcripts, cost per agent and round, and the analyses
every protocol shares (accuracy per round and condition with intervals, problems fixed and broken between
rounds, where students first go wrong).
"""

from __future__ import annotations

import re
import warnings
from functools import cached_property
from pathlib import Path

from schoolroom import log as loglib
from schoolroom import plugins as pluginlib
from schoolroom.analysis import tables
from schoolroom.environment import departs_from_gold
from schoolroom.log import live, transcript
from schoolroom.messages import Attempt, Call, EvalReport, Guidance, Message, Note, Problem, StepRewards, Usage, Verdict
from schoolroom.scalars import scalars


def _pd():
    import pandas as pd

    return pd


class Run:
    """A run directory (or its ``messages.jsonl``) read back. ``stopped`` says where a damaged log stopped being
    read (None for a whole one); every message before the damage is here."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.log = path / "messages.jsonl" if path.is_dir() else path
        self.config_error: str | None = None
        try:
            pluginlib.load_for_run(self.dir)  # the message types the run's own protocol declared
        except Exception as e:  # a config that no longer loads: its types are read as Unknown records
            self.config_error = str(e)
        messages, self.stopped = loglib.read_until_damage(self.log)
        self.all_messages: list[Message] = messages
        self.messages: list[Message] = live(messages)  # without the outputs of calls a crash cut short
        if self.stopped:
            warnings.warn(f"read up to the damage: {self.stopped}", loglib.TornLineWarning, stacklevel=2)
        self.run_id = next((m.run_id for m in self.messages if m.run_id), self.dir.name)
        self.by_id = {m.id: m for m in self.messages}

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}: {len(self.messages)} messages)"

    # ---- tables
    @cached_property
    def _rows(self) -> dict[str, list[dict]]:
        rows = tables.frames(self.messages)
        for kind in ("attempts", "verdicts"):
            for r in rows.get(kind, []):
                r["condition"] = self.condition_of(self.by_id[r["id"]])
        rewards = {r["attempt_id"]: r["score"] for r in rows.get("step_rewards", [])}
        for r in rows.get("explanations", []):  # a teacher's explanation with the reward it earned (teacher_learns)
            r["reward"] = rewards.get(r["id"])
        return rows

    def table(self, kind: str):
        """The messages of one type as a DataFrame: ``problems``, ``attempts``, ``verdicts``, ``guidance``,
        ``rationales``, ``step_rewards``, ``pairs``, ``train_results``, ``usage``, ``calls``, ``notes``,
        ``explanations`` (with the ``reward`` each earned), ``readings``, ``token_scores``, ... or a
        protocol's own message tag. Envelope columns first: id, round, agent (the sender), recipient, parents,
        time, run_id, adapter; attempts and verdicts end with their ``condition`` (``condition_of``)."""
        rows = self._rows.get(kind) or self._rows.get(tables.kind_of(kind))
        if rows is None:
            tables.tag_for(kind)  # an unknown name is an error; a known type with no messages an empty table
            rows = []
        return _pd().DataFrame(rows)

    def tables(self) -> dict:
        return {kind: _pd().DataFrame(rows) for kind, rows in self._rows.items()}

    def to_parquet(self, folder: str | Path) -> dict[str, Path]:
        """One Parquet file per message type in ``folder``; returns them by table name."""
        return tables.to_parquet(self.tables(), folder)

    # ---- reading
    def transcript(self, problem_id: str) -> str:
        """Every message about one problem, in log order."""
        return transcript(self.messages, problem_id)

    def problems(self) -> list[Problem]:
        seen: dict[str, Problem] = {}
        for m in self.messages:
            if isinstance(m, Problem):
                seen.setdefault(m.problem_id, m)
        return list(seen.values())

    def rounds(self):
        """Per round: messages, agent calls and their seconds, attempts, verdicts and how many were correct."""
        acc: dict[int, dict] = {}
        for m in self.messages:
            r = acc.setdefault(m.round, dict(round=m.round, messages=0, calls=0, seconds=0.0, attempts=0,
                                             verdicts=0, correct=0))
            r["messages"] += 1
            if isinstance(m, Call):
                r["calls"] += 1
                r["seconds"] += m.seconds
            elif isinstance(m, Attempt):
                r["attempts"] += 1
            elif isinstance(m, Verdict):
                r["verdicts"] += 1
                r["correct"] += m.correct
        return _pd().DataFrame([acc[k] for k in sorted(acc)])

    def cost(self):
        """Per agent and round: calls asked, seconds in them, engine generations, prompt and completion tokens
        (every call the log records, including those answered from another run's log, which cost 0 here)."""
        acc: dict[tuple[str, int], dict] = {}

        def at(agent, rnd):
            return acc.setdefault((agent, rnd), dict(agent=agent, round=rnd, calls=0, seconds=0.0, generations=0,
                                                    prompt_tokens=0, completion_tokens=0, engine_seconds=0.0))
        for m in self.messages:
            if isinstance(m, Call):
                a = at(m.agent, m.round)
                a["calls"] += 1
                a["seconds"] += m.seconds
            elif isinstance(m, Usage):
                a = at(m.agent, m.round)
                a["generations"] += m.calls
                a["prompt_tokens"] += m.prompt_tokens
                a["completion_tokens"] += m.completion_tokens
                a["engine_seconds"] += m.latency_s
        return _pd().DataFrame([acc[k] for k in sorted(acc)])

    def scalars(self):
        """The scalars per round that also go to TensorBoard and W&B: accuracy, training metrics, tokens, seconds."""
        return _pd().DataFrame(scalars(self.messages), columns=["tag", "step", "value"])

    # ---- analyses every protocol shares
    def accuracy(self):
        """Every accuracy the protocol reported (its EvalReports: ``compare()``, ``room.evaluate``, its own): round,
        condition, n, correct, accuracy and its 95% Wilson interval, adapter."""
        rows = [dict(round=m.round, condition=m.name, n=m.n, correct=m.correct, accuracy=m.accuracy,
                     ci_low=m.ci_low, ci_high=m.ci_high, adapter=m.adapter)
                for m in self.messages if isinstance(m, EvalReport)]
        return _pd().DataFrame(rows, columns=["round", "condition", "n", "correct", "accuracy", "ci_low", "ci_high",
                                              "adapter"])

    @cached_property
    def _counted(self) -> set[str]:
        """The verdicts some EvalReport counts."""
        return {v for m in self.messages if isinstance(m, EvalReport) for v in m.verdicts}

    @cached_property
    def _conditions(self) -> dict[str, str]:
        """verdict or attempt id -> its condition: the first EvalReport that counts the verdict, or Note of kind
        ``condition`` that claims it (a verdict its report sets aside); an attempt's is its first verdict's."""
        out: dict[str, str] = {}
        for m in self.messages:
            if isinstance(m, EvalReport):
                out |= {v: m.name for v in m.verdicts if v not in out}
            elif isinstance(m, Note) and m.kind == "condition":
                out |= {v: m.data["name"] for v in m.data.get("verdicts", ()) if v not in out}
        for v in self.messages:
            if isinstance(v, Verdict) and v.id in out:
                out.setdefault(v.attempt_id, out[v.id])
        return out

    def condition_of(self, m: Verdict | Attempt) -> str:
        """The condition a verdict or attempt belongs to, the one label the page, ``outcomes``, ``first_pits`` and
        ``table("attempts")`` use: the name of the EvalReport counting the verdict (an attempt: its verdict);
        else what the attempt was, its guidance and adapter ("reference k=1", "unguided adapter=sft-r1"), or
        "rationale check" for a grade of a teacher's rationale."""
        if m.id in self._conditions:
            return self._conditions[m.id]
        a = self.by_id.get(m.attempt_id) if isinstance(m, Verdict) else m
        if not isinstance(a, Attempt):
            return "rationale check"
        if a.id in self._conditions:  # a verdict no report counts, on an attempt another verdict of which it does
            return self._conditions[a.id]
        g = next((self.by_id[p] for p in a.parents if isinstance(self.by_id.get(p), Guidance)), None)
        label = f"{g.teacher} k={g.k}" if g is not None else "unguided"
        return label + (f" adapter={a.adapter}" if a.adapter else "")

    def outcomes(self):
        """One row per verdict on a student's attempt: round, condition, reported (counted in an EvalReport),
        problem, correct, the attempt and verdict ids, adapter, the problem's gold steps (its difficulty)."""
        gold = {p.problem_id: len(p.gold_steps) for p in self.problems()}
        rows = []
        for v in self.messages:
            if not isinstance(v, Verdict) or not isinstance(self.by_id.get(v.attempt_id), Attempt):
                continue
            a = self.by_id[v.attempt_id]
            rows.append(dict(round=v.round, condition=self.condition_of(v), reported=v.id in self._counted,
                             problem_id=v.problem_id, correct=v.correct, attempt_id=a.id, verdict_id=v.id,
                             adapter=a.adapter, gold_steps=gold.get(v.problem_id)))
        return _pd().DataFrame(rows, columns=["round", "condition", "reported", "problem_id", "correct", "attempt_id",
                                              "verdict_id", "adapter", "gold_steps"])

    def reported(self) -> dict[tuple[int, str], dict[str, bool]]:
        """(round, condition) -> problem -> correct, for every EvalReport that lists its verdicts."""
        return {(m.round, m.name): {self.by_id[v].problem_id: self.by_id[v].correct for v in m.verdicts
                                    if v in self.by_id}
                for m in self.messages if isinstance(m, EvalReport) and m.verdicts}

    def changes(self, before: str | None = None, after: str | None = None):
        """Problems fixed (wrong → right) and broken (right → wrong) between two reported conditions; by default
        between every two EvalReports of consecutive rounds whose names agree up to a trailing round or
        iteration (``reflection/round 1`` → ``reflection/round 2``)."""
        reported = self.reported()
        outcome = {name: by_problem for (_, name), by_problem in reported.items()}
        if before is not None or after is not None:
            if before not in outcome or after not in outcome:
                raise KeyError(f"no reported condition {before if before not in outcome else after!r}; "
                               f"conditions: {', '.join(outcome)}")
            pairs = [(before, after)]
        else:
            family = {name: re.sub(r"[/ _-]*(round|it|iteration) ?\d+$", "", name) for _, name in reported}
            pairs = [(a, b) for ra, a in reported for rb, b in reported if family[a] == family[b] and rb == ra + 1]
        rows = []
        for a, b in pairs:
            for pid in outcome[a].keys() & outcome[b].keys():
                x, y = outcome[a][pid], outcome[b][pid]
                if x != y:
                    rows.append(dict(before=a, after=b, problem_id=pid, change="fixed" if y else "broken"))
        return _pd().DataFrame(rows, columns=["before", "after", "problem_id", "change"])

    def first_pits(self):
        """Where each wrong attempt first goes wrong: the Explorer's first pit (``source`` rollouts) where its
        StepRewards measured one, else the first step that departs from the gold steps' numbers (``gold``),
        None where neither finds one. ``pit`` counts steps from 1 (1 is the attempt's first step), as the page and
        ``pits`` do; ``gold_steps`` is the problem's difficulty."""
        problems = {p.problem_id: p for p in self.problems()}
        explored = {m.attempt_id: m.first_pit for m in self.messages
                    if isinstance(m, StepRewards) and m.source == "rollouts" and m.first_pit is not None}
        rows = []
        for v in self.messages:
            a = self.by_id.get(getattr(v, "attempt_id", ""))
            if not isinstance(v, Verdict) or v.correct or not isinstance(a, Attempt):
                continue
            p = problems.get(a.problem_id)
            pit, source = (explored[a.id], "rollouts") if a.id in explored else (
                departs_from_gold(p, a.steps) if p else None, "gold")
            pit = None if pit is None else pit + 1  # StepRewards and departs_from_gold count from 0
            rows.append(dict(round=v.round, condition=self.condition_of(v), problem_id=a.problem_id,
                             attempt_id=a.id, steps=len(a.steps), pit=pit, source=source,
                             gold_steps=len(p.gold_steps) if p else None))
        return _pd().DataFrame(rows, columns=["round", "condition", "problem_id", "attempt_id", "steps", "pit",
                                              "source", "gold_steps"])

    def pits(self):
        """First pits summarised by round and difficulty: wrong attempts, how many have a pit, at which step on
        average (``first_pits``' steps: 1.0 is the first step), and how many go wrong at their first step."""
        df = self.first_pits()
        if df.empty:
            return _pd().DataFrame(columns=["round", "gold_steps", "wrong", "located", "mean_step", "at_step_1"])
        g = df.groupby(["round", "gold_steps"], dropna=False)
        return _pd().DataFrame({"wrong": g.size(), "located": g["pit"].count(), "mean_step": g["pit"].mean(),
                                "at_step_1": g["pit"].apply(lambda s: int((s == 1).sum()))}).reset_index()
