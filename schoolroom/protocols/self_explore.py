"""Self-Explore (self-explore.md): step-level preference pairs from the student's own first pits.

1. RFT start: SFT the student on the gold solutions of the training problems.
2. The student samples attempts on the training problems; the verifier grades them.
3. The explorer (the student's model and adapter) rolls out from every step prefix of each wrong
   attempt to find its first pit, and makes a step-level pair: prompt + steps before the pit,
   chosen = a correct completion from there, rejected = the pit step.
4. DPO from the SFT adapter on those pairs.
5. Evaluate on held-out problems, beside the baselines trained in the same run: SFT only, and
   outcome-level DPO (whole correct vs whole wrong attempts of the same problem).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from schoolroom.environment import gold_rationale
from schoolroom.messages import Attempt, Note, PreferencePair, Problem, StepRewards, TrainRequest, TrainResult
from schoolroom.protocols.classroom import Classroom, Figure, Report, Series, protocol
from schoolroom.protocols.report import compare


class SelfExploreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    train: str = "train"
    eval: str = "eval"
    samples: int = 4  # attempts per training problem
    temperature: float = 0.7  # for sampling attempts and rollouts
    k: int = 4  # rollouts per step prefix
    search: str = "linear"  # linear (the paper) | binary
    completer: str = "student"  # student: the explorer runs the student's adapter; teacher: its own model (oracle)
    max_explore: int | None = None  # explore at most this many wrong attempts
    lora: dict[str, Any] = {}
    sft: dict[str, Any] = {}  # hyperparameters: learning_rate, epochs, batch_size, max_steps, ...
    dpo: dict[str, Any] = {}
    evaluate_base: bool = True
    seed: int = 0


@protocol("self_explore", SelfExploreConfig)
def self_explore(room: Classroom, cfg: SelfExploreConfig) -> Report:
    train, test = room.problems(cfg.train), room.problems(cfg.eval)

    gold = [gold_rationale(p) for p in train]
    sft = room.trainer.train(request("sft", "sft", gold, cfg.sft, cfg), gold, train)
    room.student.load(sft)
    if cfg.completer == "student":
        room.explorer.load(sft)

    attempts = room.student.solve(train, n=cfg.samples, temperature=cfg.temperature)
    verdicts = room.verifier.check(attempts, train)
    # explored: wrong attempts that state an answer (one cut off by max_tokens is not known to end in a pit)
    wrong = [a for a, v in zip(attempts, verdicts) if not v.correct and a.answer is not None][: cfg.max_explore]

    explored = room.explorer.explore(wrong, train, k=cfg.k, search=cfg.search, temperature=cfg.temperature)
    step_pairs = [m for m in explored if isinstance(m, PreferencePair)]
    whole_pairs = outcome_pairs(train, attempts, [v.correct for v in verdicts], among={a.id for a in wrong})

    step_dpo = dpo(room, "step_dpo", step_pairs, sft, train, cfg)
    outcome_dpo = dpo(room, "outcome_dpo", whole_pairs, sft, train, cfg)

    models = ([("base", None)] if cfg.evaluate_base else []) + [
        ("sft", sft), ("outcome_dpo", outcome_dpo), ("step_dpo", step_dpo)]
    results = {name: [v.correct for v in room.evaluate(name, test, adapter)]
               for name, adapter in models if adapter is not None or name == "base"}
    room.student.load(None)
    return report(room, cfg, train, test, attempts, [v.correct for v in verdicts], explored, whole_pairs, results,
                  {n: a for n, a in models})


def request(kind: str, name: str, data: list, hyper: dict, cfg: SelfExploreConfig,
            base: TrainResult | None = None) -> TrainRequest:
    return TrainRequest(kind=kind, name=name, data=tuple(m.id for m in data), lora=cfg.lora, hyper=hyper,
                        seed=cfg.seed, base_adapter=base.adapter if base else None)


def dpo(room: Classroom, name: str, pairs: list[PreferencePair], sft: TrainResult, train: list[Problem],
        cfg: SelfExploreConfig) -> TrainResult | None:
    if not pairs:
        room.record(Note(kind="skipped", text=f"{name}: no preference pairs, nothing to train"))
        return None
    return room.trainer.train(request("dpo", name, pairs, cfg.dpo, cfg, base=sft), pairs, train)


def outcome_pairs(problems: list[Problem], attempts: list[Attempt], correct: list[bool],
                  among: set[str] | None = None) -> list[PreferencePair]:
    """Outcome-level baseline: each wrong attempt (of those ``among``, the explored ones: the same data as the
    step-level pairs) against one of the correct attempts of its problem."""
    right: dict[str, list[Attempt]] = {}
    wrong: dict[str, list[Attempt]] = {}
    for a, ok in zip(attempts, correct):
        if ok or among is None or a.id in among:
            (right if ok else wrong).setdefault(a.problem_id, []).append(a)
    question = {p.problem_id: p.question for p in problems}
    return [PreferencePair(problem_id=pid, prompt=question[pid], chosen=good.prefix + good.text,
                           rejected=bad.prefix + bad.text, level="outcome", parents=(good.id, bad.id))
            for pid, bads in wrong.items() if pid in right
            for good, bad in zip(right[pid] * len(bads), bads)]


def report(room, cfg, train, test, attempts, correct, explored, whole_pairs, results, adapters) -> Report:
    rewards = [m for m in explored if isinstance(m, StepRewards)]
    step_pairs = [m for m in explored if isinstance(m, PreferencePair)]
    pits = [r.first_pit for r in rewards if r.first_pit is not None]
    tokens = sum(r.tokens for r in rewards)
    explored_problems = len({r.problem_id for r in rewards})
    lines = [f"# Self-Explore: {room.config.run.name}", "",
             f"Student `{_student_model(room)}`; {len(train)} training problems (`{cfg.train}`), {len(test)} held-out "
             f"(`{cfg.eval}`); {cfg.samples} samples per problem at temperature {cfg.temperature}; k = {cfg.k} rollouts "
             f"per step prefix, {cfg.search} search; completer: the {cfg.completer} (`{_explorer_model(room)}`).", "",
             "## Held-out accuracy", ""]
    rows, accuracy, accuracy_fig = compare(results, "sft", seed=cfg.seed)
    lines += rows
    metrics: dict[str, Any] = {"accuracy": accuracy}
    for name in ("outcome_dpo", "step_dpo"):
        if adapters.get(name) is None:
            lines.append(f"| {name} | not trained: no pairs | — |")

    hist = Counter(p + 1 for p in pits)
    sampled_acc = sum(correct) / max(1, len(correct))
    lines += ["", "## Exploration", "",
              f"- attempts sampled on the training problems: {len(attempts)}, correct: {sum(correct)} "
              f"({100 * sampled_acc:.1f}%)",
              f"- wrong attempts explored: {len(rewards)} (on {explored_problems} problems); first pit found in "
              f"{len(pits)}; no pit where even the question alone got no correct rollout: {len(rewards) - len(pits)}",
              f"- step-level pairs: {len(step_pairs)}; outcome-level pairs: {len(whole_pairs)}",
              f"- rollout tokens: {tokens} in all, {tokens / max(1, len(rewards)):.0f} per explored attempt, "
              f"{tokens / max(1, explored_problems):.0f} per explored problem; rollouts: {sum(r.rollouts for r in rewards)}",
              "", "First-pit position (step number, 1 = the first step):", "",
              "| first pit at step | " + " | ".join(str(s) for s in sorted(hist)) + " |",
              "| --- | " + " | ".join("---" for _ in hist) + " |",
              "| attempts | " + " | ".join(str(hist[s]) for s in sorted(hist)) + " |"]
    relative = [r.first_pit / len(r.rewards) for r in rewards if r.first_pit is not None and r.rewards]
    if relative:
        lines.append(f"\nMean relative position of the first pit (0 = first step, 1 = last): "
                     f"{sum(relative) / len(relative):.2f}")
    lines += ["", "## Training", "", "| adapter | trained for | examples | steps | first loss | last loss | seconds |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, a in adapters.items():
        if a is not None:
            m = a.metrics
            lines.append(f"| {a.adapter} | {name} | {m.get('examples', m.get('pairs', 0)):.0f} | {m.get('steps', 0):.0f} "
                         f"| {m.get('first_loss', float('nan')):.3f} | {m.get('last_loss', float('nan')):.3f} | "
                         f"{m.get('seconds', 0):.0f} |")
    metrics.update(sampled_accuracy=sampled_acc, explored=len(rewards), pits=len(pits), step_pairs=len(step_pairs),
                   outcome_pairs=len(whole_pairs), rollout_tokens=tokens,
                   rollout_tokens_per_explored_problem=tokens / max(1, explored_problems),
                   first_pit_histogram={str(k): v for k, v in sorted(hist.items())},
                   train_metrics={n: a.metrics for n, a in adapters.items() if a is not None})
    figs = [accuracy_fig]
    if hist:
        figs.append(Figure(name="first_pit", title="Where the student first goes wrong", xlabel="first pit at step",
                           ylabel="wrong attempts", kind="bar", xticks=[float(s) for s in sorted(hist)],
                           series=[Series(label="attempts", x=[float(s) for s in sorted(hist)],
                                          y=[float(hist[s]) for s in sorted(hist)])]))
    return Report(title="self_explore", markdown="\n".join(lines), metrics=metrics, figures=figs)


def _student_model(room: Classroom) -> str:
    return next(a.model for a in room.config.agents.values() if a.role == "student")


def _explorer_model(room: Classroom) -> str:
    return room.describe(next(n for n, a in room.config.agents.items() if a.role == "explorer"))
