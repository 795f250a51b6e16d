"""What reinforce and best_of_n share: the reward models trained first, from the start policy (``start.py``).

Reward models (Let's Reinforce Step by Step, stage 2), each on its own verifier agent:
- ORM: the start policy samples attempts on ``reward_data``; the checker's verdicts are the labels.
- PRM: labels per step from the Explorer's rollouts from every step prefix of the wrong samples (Math-Shepherd's
  Monte-Carlo labels; the correct samples' steps are labelled 1), and/or human labels in the PRM800K layout.
Either can be loaded instead of trained (``orm_adapter``, ``prm_adapter``: a folder of an earlier run's).

Human labels count each rated step once, and the problems of a ``human_heldout`` share (seeded by
``human_split_seed``) are held out of the PRM's training: ``prm_heldout`` scores them with the trained PRM and
``heldout_check`` sets its step AUC and first-wrong-step accuracy beside a constant, position and length baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from schoolroom.api import (Attempt, Classroom, Message, Problem, RewardModelConfig, StepRewards, Table,
                            TrainRequest, TrainResult, Verdict, bootstrap_groups, first_below, fmt, load_prm800k,
                            lowest, rank_auc, rated_steps, resolve_data_dir, split_by_problem)
from schoolroom.protocols.start import StartSettings, given, problem_sets


class RewardModelSettings(StartSettings, kw_only=True):
    checker: str = "verifier"  # the agent that checks final answers
    orm: str = "orm"  # the verifier agent that runs the outcome reward model
    prm: str = "prm"  # the verifier agent that runs the process reward model
    explorer: str = "explorer"  # rolls out from step prefixes for the PRM's Monte-Carlo labels
    reward_data: str | list[str] = "train"  # problem set(s) whose sampled attempts the reward models learn from
    reward_samples: int = 4  # attempts per problem
    reward_temperature: float = 0.7
    # human (the paper) and/or rollouts
    prm_labels: list[Literal["human", "rollouts"]] = msgspec.field(default_factory=lambda: ["human"])
    label_mode: Literal["hard", "soft"] = "hard"  # rollout labels: hard (any rollout reached the answer) | soft
    rollouts_k: int = 4  # rollouts per step prefix
    max_explore: int | None = None  # explore at most this many wrong attempts
    human_labels: str = "prm800k_phase1_test_stepwise_critique_derived"  # under the data directory, or a path
    human_limit: int | None = None  # use at most this many human-labelled solutions
    neutral: Literal["positive", "negative", "skip"] = "positive"  # a neutral (0) PRM800K rating is
    human_heldout: float = 0.3  # share of the human-labelled problems held out of the PRM's training, to check it on
    human_split_seed: int = 0  # which problems are held out (the same split for every run seed)
    # a PRM batch is batch_size examples, or all the examples of batch_size problems
    prm_batch_by: Literal["example", "problem"] = "example"
    orm_adapter: str | None = None  # load this trained ORM instead of training one
    prm_adapter: str | None = None
    orm_settings: RewardModelConfig = RewardModelConfig()
    prm_settings: RewardModelConfig = RewardModelConfig()

    def __post_init__(self):
        if not self.prm_labels:
            raise ValueError("prm_labels names human and/or rollouts: none given")
        if not 0 <= self.human_heldout < 1:
            raise ValueError(f"human_heldout is a share in [0, 1), not {self.human_heldout}")
        if self.prm_batch_by not in ("example", "problem"):
            raise ValueError(f"prm_batch_by is example or problem, not {self.prm_batch_by!r}")


def reward_models(room: Classroom, cfg: RewardModelSettings, start: TrainResult | None,
                  kinds: set[str]) -> dict[str, TrainResult]:
    """Train (or load) the reward models named in ``kinds`` (orm, prm) and load each on its verifier."""
    out: dict[str, TrainResult] = {}
    if not kinds & {"orm", "prm"}:
        return out
    problems = problem_sets(room, cfg.reward_data)
    samples: list[Attempt] = []
    verdicts: list[Verdict] = []
    if ("orm" in kinds and not cfg.orm_adapter) or ("prm" in kinds and not cfg.prm_adapter):
        room.student.load(start)
        samples = room.student.solve(problems, n=cfg.reward_samples, temperature=cfg.reward_temperature)
        verdicts = room.agent(cfg.checker).check(samples, problems)
    for kind in ("orm", "prm"):
        if kind not in kinds:
            continue
        agent, adapter = (cfg.orm, cfg.orm_adapter) if kind == "orm" else (cfg.prm, cfg.prm_adapter)
        if adapter:
            out[kind] = given(room, adapter, f"{kind}_adapter")
        else:
            data, pool = samples + verdicts, problems
            if kind == "prm":
                more, extra = prm_labels(room, cfg, start, samples, verdicts, problems)
                data, pool = data + more, problems + extra
            request = TrainRequest(kind=kind, name=f"{kind}_model", data=tuple(m.id for m in data),
                                   base_model=room.config.agents[agent].model, lora=cfg.lora.asdict(),
                                   hyper=(cfg.orm_settings if kind == "orm" else cfg.prm_settings).asdict()
                                   | {"labels": cfg.label_mode}
                                   | ({"batch_by": cfg.prm_batch_by} if kind == "prm" else {}), seed=cfg.seed)
            out[kind] = room.trainer.train(request, data, pool)
        room.agent(agent).load(out[kind])
    return out


def prm_labels(room: Classroom, cfg: RewardModelSettings, start: TrainResult | None, samples: list[Attempt],
               verdicts: list[Verdict], problems: list[Problem]) -> tuple[list[Message], list[Problem]]:
    """Step labels for the PRM (and any problems they add): Monte-Carlo rollouts from the prefixes of the wrong
    samples (correct samples need none: their steps led to the answer), and/or human labels (each rated step
    once; the problems of the ``human_heldout`` share left out, for ``prm_heldout``)."""
    labels: list[Message] = []
    extra: list[Problem] = []
    if "rollouts" in cfg.prm_labels:
        wrong = [a for a, v in zip(samples, verdicts) if not v.correct and a.answer is not None][: cfg.max_explore]
        room.agent(cfg.explorer).load(start)
        explored = room.agent(cfg.explorer).explore(wrong, problems, k=cfg.rollouts_k, search="linear",
                                                    temperature=cfg.reward_temperature)
        labels += [m for m in explored if isinstance(m, StepRewards)]
    if "human" in cfg.prm_labels:
        rows, _ = human_split(cfg)
        extra = list({p.problem_id: p for p, _, _ in rows}.values())
        labels += [m for _, a, r in rows for m in (a, r)]
        room.record(*extra)
    return labels, extra


def prm_heldout(room: Classroom, cfg: RewardModelSettings) -> tuple[Table, dict[str, Any]] | None:
    """The trained PRM on the human step labels of the problems held out of its training (``heldout_check``), scored
    by its verifier; None where there is nothing to check: no human labels, none held out, or a PRM loaded from
    elsewhere (what it was trained on is not known here)."""
    if "human" not in cfg.prm_labels or cfg.prm_adapter or cfg.human_heldout <= 0:
        return None
    train, held = human_split(cfg)
    if not held:
        return None
    problems = list({p.problem_id: p for p, _, _ in held}.values())
    scores = room.agent(cfg.prm).score([a for _, a, _ in held], problems)
    return heldout_check(train, held, [r.rewards for r in scores], seed=cfg.seed)


def departures(room: Classroom, cfg: RewardModelSettings) -> list[str]:
    """How the reward models of this run differ from the paper's, one markdown bullet each (for reports)."""
    out = []
    for kind, agent in (("orm", cfg.orm), ("prm", cfg.prm)):
        if agent in room.config.agents:
            out.append(f"- {kind.upper()} backbone: `{room.config.agents[agent].model}`, a causal LM with LoRA and a "
                       "scalar head (the paper: DeBERTa-v3, about 300M parameters)")
    loaded = "loaded from `{}`: trained outside this run, on the data that run used"
    out.append("- ORM data: " + (loaded.format(cfg.orm_adapter) if cfg.orm_adapter else
               "the start policy's own samples, labelled by the answer check (the paper: PRM800K's generator "
               "samples, labelled by their final answers)"))
    labels = {"human": f"human labels (`{cfg.human_labels}`, neutral counted {cfg.neutral}, each rated step once"
                       + (f"; {cfg.human_heldout:.0%} of its problems held out to check the PRM on" if cfg.human_heldout
                          else "") + ")",
              "rollouts": f"Monte-Carlo labels from {cfg.rollouts_k} rollouts per step prefix of the wrong samples "
                          f"({cfg.label_mode}; correct samples' steps labelled 1)"}
    out.append("- PRM labels: " + (loaded.format(cfg.prm_adapter) if cfg.prm_adapter else
               " and ".join(labels[x] for x in cfg.prm_labels) +
               ("" if cfg.prm_labels == ["human"] else " (the paper: PRM800K human labels)")))
    return out


def human_rows(cfg: RewardModelSettings) -> list[tuple[Problem, Attempt, StepRewards]]:
    """The human-labelled solutions (PRM800K layout) the settings name, each rated step labelled once."""
    root = resolve_data_dir()
    path = Path(cfg.human_labels) if Path(cfg.human_labels).is_absolute() or root is None else root / cfg.human_labels
    return load_prm800k(path, neutral=cfg.neutral, limit=cfg.human_limit, unique=True)


def human_split(cfg: RewardModelSettings) -> tuple[list, list]:
    """(the human-labelled solutions the PRM learns from, those of the problems held out of its training)."""
    return split_by_problem(human_rows(cfg), cfg.human_heldout, cfg.human_split_seed)


class Baselines:
    """Step scores that read nothing of a step but its place or length, fitted on the training split's labels:
    ``constant`` (the share of steps rated correct), ``position`` (that share among the steps at the same index; 20
    and later pooled) and ``length`` (among the steps of about the same length in characters, by deciles).
    Each is a probability that the step is correct, so the PRM's 0.5 threshold means the same for all."""

    names = ("constant", "position", "length")

    def __init__(self, train: list[tuple[Problem, Attempt, StepRewards]]):
        steps = [(len(key[1]) - 1, len(key[1][-1]), y) for key, y in rated_steps(train).items()]
        if not steps:
            raise ValueError("no labelled step in the training split to fit the baselines on")
        self.rate = sum(y for *_, y in steps) / len(steps)
        lengths = sorted(n for _, n, _ in steps)
        self.edges = sorted({lengths[len(lengths) * k // 10] for k in range(1, 10)})
        self.by_position = self._rates([(min(i, 20), y) for i, _, y in steps])
        self.by_length = self._rates([(self._bin(n), y) for _, n, y in steps])

    def _rates(self, pairs: list[tuple[int, float]]) -> dict[int, float]:
        sums: dict[int, list[float]] = {}
        for k, y in pairs:
            sums.setdefault(k, []).append(y)
        return {k: (sum(v) + self.rate) / (len(v) + 1) for k, v in sums.items()}  # one pseudo-step at the mean

    def _bin(self, n: int) -> int:
        return sum(n >= e for e in self.edges)

    def score(self, name: str, index: int, step: str) -> float:
        if name == "constant":
            return self.rate
        if name == "position":
            return self.by_position.get(min(index, 20), self.rate)
        return self.by_length.get(self._bin(len(step)), self.rate)


def heldout_check(train: list[tuple[Problem, Attempt, StepRewards]], heldout: list[tuple[Problem, Attempt, StepRewards]],
                  prm: list[tuple[float | None, ...]], name: str = "PRM", resamples: int = 1000,
                  seed: int = 0) -> tuple[Table, dict[str, Any]]:
    """How a PRM scores human step labels of problems it never saw, beside baselines fitted on the training split.

    ``heldout``: the held-out solutions with their labels; ``prm``: the PRM's step scores of each (None: not
    scored, e.g. cut off by the length limit). Every rated step counts once (the solutions of a problem share
    steps). Step AUC: the chance a step rated correct outscores one rated wrong (0.5 is chance), pooled over the
    held-out problems, with a 95% interval from resampling whole problems, and the PRM's lead over each baseline
    on the same resamples. First wrong step, over the solutions with a step rated wrong: the share whose lowest
    score is at their first wrong step; and at threshold 0.5 (the first step scored below it is the one flagged,
    none flagged = no wrong step): the share of those solutions flagged at their first wrong step, the share of
    the solutions with no wrong step left unflagged, and their harmonic mean (ProcessBench's F1)."""
    base = Baselines(train)
    by_key: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    solutions = []
    for (problem, attempt, rewards), scores in zip(heldout, prm):
        keys = [(problem.question, attempt.steps[: i + 1]) for i in range(len(attempt.steps))]
        for i, (key, y) in enumerate(zip(keys, rewards.rewards)):
            s = scores[i] if i < len(scores) else None
            if key not in by_key:
                by_key[key] = {"problem": problem.problem_id, "label": None, "scores": {
                    name: s, **{b: base.score(b, i, attempt.steps[i]) for b in base.names}}}
            if y is not None:
                by_key[key]["label"] = y
        solutions.append((problem.problem_id, keys))
    labels = {k: v["label"] for k, v in by_key.items()}
    scorers = [name, *base.names]
    steps = [v for v in by_key.values() if v["label"] is not None]
    unscored = sum(v["scores"][name] is None for v in steps)
    steps = [v for v in steps if v["scores"][name] is not None]  # the same steps for every scorer
    groups = [v["problem"] for v in steps]
    y = [v["label"] for v in steps]
    cols = {s: [v["scores"][s] for v in steps] for s in scorers}

    def step_auc(s: str, idx: list[int]) -> float | None:
        return rank_auc([cols[s][i] for i in idx], [y[i] for i in idx])

    def lead(s: str):
        def diff(idx):
            a, b = step_auc(name, idx), step_auc(s, idx)
            return None if a is None or b is None else a - b
        return diff

    # solutions whose every step is labelled and scored; gold: the first step rated wrong (None: no wrong step)
    sols = []
    for pid, keys in solutions:
        if all(labels.get(k) is not None and by_key[k]["scores"][name] is not None for k in keys):
            gold = next((i for i, k in enumerate(keys) if labels[k] < 0.5), None)
            sols.append((pid, gold, {s: [by_key[k]["scores"][s] for k in keys] for s in scorers}))
    wrong = [x for x in sols if x[1] is not None]
    right = [x for x in sols if x[1] is None]

    def share(xs, hit, idx=None):
        picked = [xs[i] for i in idx] if idx is not None else xs
        return sum(hit(x) for x in picked) / len(picked) if picked else None

    def found(s):
        return lambda x: lowest(x[2][s]) == x[1]

    def flagged(s):
        return lambda x: first_below(x[2][s]) == x[1]

    def f1(a, b):
        return None if a is None or b is None else (0.0 if a + b == 0 else 2 * a * b / (a + b))

    def interval(ci):
        return "" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"

    rows, metrics = [], {"scorers": {}}
    every = list(range(len(y)))
    prm_auc = step_auc(name, every)
    for s in scorers:
        a = step_auc(s, every)
        ci = bootstrap_groups(groups, lambda idx, s=s: step_auc(s, idx), resamples, seed)
        d = None if s == name else bootstrap_groups(groups, lead(s), resamples, seed)
        d_mean = None if s == name or a is None or prm_auc is None else prm_auc - a
        lo = share(wrong, found(s))
        lo_ci = bootstrap_groups([x[0] for x in wrong], lambda idx, s=s: share(wrong, found(s), idx), resamples, seed)
        at_wrong, at_right = share(wrong, flagged(s)), share(right, lambda x, s=s: first_below(x[2][s]) is None)
        rows.append([s, "—" if a is None else f"{a:.3f}{interval(ci)}",
                     "" if s == name else ("—" if d_mean is None else f"{d_mean:+.3f}{interval(d)}"),
                     "—" if lo is None else f"{lo:.3f}{interval(lo_ci)}",
                     fmt(at_wrong), fmt(at_right), fmt(f1(at_wrong, at_right))])
        metrics["scorers"][s] = {"step_auc": a, "step_auc_ci": ci, "prm_lead": d_mean, "prm_lead_ci": d,
                                 "first_wrong_lowest": lo, "first_wrong_lowest_ci": lo_ci,
                                 "flagged_at_first_wrong": at_wrong, "unflagged_correct": at_right,
                                 "f1": f1(at_wrong, at_right)}
    problems = len({v["problem"] for v in steps})
    metrics |= {"problems": problems, "train_problems": len({p.problem_id for p, _, _ in train}),
                "steps": len(y), "wrong_steps": sum(1 for v in y if v < 0.5), "unscored_steps": unscored,
                "solutions_with_a_wrong_step": len(wrong), "solutions_without": len(right), "resamples": resamples}
    note = (f"{problems} held-out problems (the PRM trained on {metrics['train_problems']} others): {len(y)} rated "
            f"steps, {metrics['wrong_steps']} of them rated wrong" + (f" ({unscored} more not scored: cut off)"
                                                                       if unscored else "") +
            f"; {len(wrong)} solutions with a wrong step, {len(right)} without. Intervals: 95%, {resamples} "
            "resamples of the held-out problems. Baselines fitted on the training split's labels: constant (the "
            "share rated correct), position (that share at the step's index), length (at the step's length in "
            "characters). Lowest = first wrong: the solution's lowest-scored step is its first wrong one (ties: "
            "the earliest). At 0.5: the first step scored below 0.5 is flagged as the first wrong one.")
    table = Table(f"{name} on human step labels of held-out problems", [
        "scorer", "step AUC", f"{name} − this", "lowest = first wrong", "at 0.5: wrong solutions flagged right",
        "at 0.5: correct solutions unflagged", "F1"], rows, note=note)
    return table, metrics
