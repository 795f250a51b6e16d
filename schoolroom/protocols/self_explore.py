"""Self-Explore (self-explore.md; the authors' code: hbin0701/Self-Explore): step-level preference pairs from the
student's own first pits.

1. FT: SFT the student on the gold solutions of the training problems.
2. The FT student samples ``samples`` attempts per training problem; the verifier grades them.
3. RFT start (``start = "rft"``, the paper): the correct samples whose written equations hold (the authors'
   ``is_eq_correct``; ``check_equations = false`` keeps them all), each text once, deduplicated by their equations
   (at most ``rft_keep`` per problem), with the gold solutions train a fresh adapter from the base model.
   ``start = "sft_gold"``: FT is the start.
4. Outcome pairs: each kept correct sample against the wrong sample of its problem most different from it
   (largest edit distance, each wrong sample used once), as the authors' ``get_dpo_data``.
5. The explorer (the start's model and adapter, or a teacher's model) rolls out from the step prefixes s1..st of
   the rejected sample of every outcome pair, t = 1..n (the whole attempt too, as the authors'
   ``gen_step_explore.py``), to find its first pit, a rollout counting only where its own text states the gold
   answer; and makes a step-level pair: prompt + steps before the pit, chosen = the shortest correct completion
   from there (a pit at step 1: the correct sample of the outcome pair), rejected = the pit step; pairs
   deduplicated per problem (``form_gpair``). ``unmeasured = "drop"`` or ``"last_step"`` do not roll out from
   the whole attempt (departures: the attempts whose pit is their last step are then dropped, or their pit
   deduced).
6. DPO from the start on the step-level pairs (Self-Explore) and on the outcome pairs (the baseline), with the
   ``dpo`` settings and each of ``dpo_sweep``'s (``step_dpo@learning_rate=2e-05,beta=0.5``: learning rates and
   betas tried on the pair counts at hand).
7. Evaluate on held-out problems: base, FT, RFT, outcome-level DPO, step-level DPO (at every DPO setting).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schoolroom.api import (Classroom, Config, DPOConfig, LoRAConfig, Note, Pending, PreferencePair, Problem, Report,
                            Search, SFTConfig, TrainRequest, TrainResult, Unmeasured, dedupe_pairs, gold_rationale,
                            protocol)
from schoolroom.protocols.self_explore_data import (  # noqa: F401
    as_rationale,
    dpo_settings,
    equations,
    equations_hold,
    outcome_pairs,
    rft_keep,
)
from schoolroom.protocols.self_explore_report import self_explore_report


class SelfExploreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    train: str = "train"
    eval: str = "eval"
    start: Literal["rft", "sft_gold"] = "rft"  # rft (the paper) | sft_gold: SFT on the gold solutions only
    samples: int = 4  # attempts per training problem from the FT model (the authors: 100)
    rft_keep: int = 8  # correct samples kept per problem for RFT and outcome pairs (the authors: 8)
    check_equations: bool = True  # drop correct samples whose written equations are false (the authors' is_eq_correct)
    temperature: float = 0.7  # for sampling attempts and rollouts
    k: int = 4  # rollouts per step prefix
    search: Search = "linear"  # linear (the paper) | binary
    # the last step (the whole wrong attempt): rollout = roll out from it too, its pit measured (the authors) |
    # drop = not rolled out, an attempt whose earlier prefixes all reach the answer dropped (departure) |
    # last_step = not rolled out, that attempt's pit put at its last step (departure: deduced, not measured)
    unmeasured: Unmeasured = "rollout"
    # student: the explorer runs the start's adapter; teacher: a teacher's model (oracle)
    completer: Literal["student", "teacher"] = "student"
    teacher: str | None = None  # completer = teacher: which teacher agent (default: the only one)
    max_explore: int | None = None  # explore at most this many wrong attempts
    lora: LoRAConfig = LoRAConfig()
    sft: SFTConfig = SFTConfig()  # for FT and RFT
    dpo: DPOConfig = DPOConfig()
    # more DPO settings, each over `dpo` (e.g. { learning_rate = 2e-5, beta = 0.5 }): step- and outcome-level DPO
    # are trained and evaluated at each too, named step_dpo@learning_rate=2e-05,beta=0.5
    dpo_sweep: list[dict[str, Any]] = []
    evaluate_base: bool = True
    seed: int = 0


def check(config: Config, cfg: SelfExploreConfig) -> None:
    """The completer must continue the prefix it is given, with the model the setting names; every sweep point
    must be DPO settings."""
    for i, point in enumerate(cfg.dpo_sweep):
        try:
            cfg.dpo.merged(point)
        except msgspec.ValidationError as e:
            raise ValueError(f"a DPO setting: {e} - at `$.protocol.dpo_sweep[{i}]`") from None
    explorers = [(n, a) for n, a in config.agents.items() if a.role == "explorer"]
    if len(explorers) != 1:
        raise ValueError(f"self_explore needs one agent with role explorer, not {len(explorers)} - at `$.agents`")
    name, explorer = explorers[0]
    if explorer.engine == "reference":
        raise ValueError(f"the explorer's engine ignores the step prefix it must continue (reference answers with the "
                         f"gold solution): give it a model - at `$.agents.{name}.engine`")
    if cfg.completer == "teacher":
        teachers = [n for n, a in config.agents.items() if a.role == "teacher" and (cfg.teacher in (None, n))]
        if len(teachers) != 1:
            raise ValueError("completer = \"teacher\" completes with a teacher's model: name it with teacher = \"...\" "
                             "(an agent of role teacher) - at `$.protocol.teacher`")
        t = config.agents[teachers[0]]
        if (t.engine, t.model, t.base_url) != (explorer.engine, explorer.model, explorer.base_url):
            raise ValueError(f"completer = \"teacher\": the explorer must run teacher {teachers[0]}'s model "
                             f"({t.engine} {t.model}), not {explorer.engine} {explorer.model} - at `$.agents.{name}`")


@protocol("self_explore", SelfExploreConfig, check=check)
def self_explore(room: Classroom, cfg: SelfExploreConfig) -> Report:
    train, test = room.problems(cfg.train), room.problems(cfg.eval)

    gold = [gold_rationale(p) for p in train]
    ft = room.trainer.train(request("sft", "sft", gold, cfg.sft, cfg), gold, train)
    room.student.load(ft)
    attempts = room.student.solve(train, n=cfg.samples, temperature=cfg.temperature)
    correct = [v.correct for v in room.verifier.check(attempts, train)]
    kept = rft_keep([a for a, ok in zip(attempts, correct) if ok], cfg.rft_keep, cfg.check_equations)
    start = ft
    if cfg.start == "rft":
        data = gold + [as_rationale(a) for a in kept]
        start = room.trainer.train(request("sft", "rft", data, cfg.sft, cfg), data, train)

    whole_pairs = outcome_pairs(train, kept, [a for a, ok in zip(attempts, correct) if not ok])
    by_id = {a.id: a for a in attempts}
    explore = [(by_id[x.parents[1]], by_id[x.parents[0]]) for x in whole_pairs][: cfg.max_explore]
    if cfg.completer == "student":
        room.explorer.load(start)
    explored = room.explorer.explore([w for w, _ in explore], train, k=cfg.k, search=cfg.search,
                                     temperature=cfg.temperature, partners=[c for _, c in explore],
                                     unmeasured=cfg.unmeasured)
    step_pairs = dedupe_pairs([m for m in explored if isinstance(m, PreferencePair)])

    # the DPO trainings are independent: started together (side by side on a trainer with replicas > 1)
    runs = [(f"{kind}{suffix}", pairs, settings) for suffix, settings in dpo_settings(cfg).items()
            for kind, pairs in (("outcome_dpo", whole_pairs), ("step_dpo", step_pairs))]
    trained = room.wait([dpo(room, name, pairs, start, train, cfg, settings) for name, pairs, settings in runs])

    models = ([("base", None)] if cfg.evaluate_base else []) + [("sft", ft)] + \
        ([("rft", start)] if cfg.start == "rft" else []) + [(name, a) for (name, _, _), a in zip(runs, trained)]
    results = {name: room.evaluate(name, test, adapter)  # verdicts: compare() logs no second EvalReport
               for name, adapter in models if adapter is not None or name == "base"}
    room.student.load(None)
    return self_explore_report(room, cfg, train, test, attempts, correct, kept, explored, step_pairs, whole_pairs,
                               results, dict(models))


def request(kind: str, name: str, data: list, hyper: SFTConfig, cfg: SelfExploreConfig,
            base: TrainResult | None = None) -> TrainRequest:
    return TrainRequest(kind=kind, name=name, data=tuple(m.id for m in data), lora=cfg.lora.asdict(),
                        hyper=hyper.asdict(), seed=cfg.seed, base_adapter=base.adapter if base else None)


def dpo(room: Classroom, name: str, pairs: list[PreferencePair], start: TrainResult, train: list[Problem],
        cfg: SelfExploreConfig, settings: DPOConfig) -> Pending | None:
    """The DPO training started (None: no pairs, said in a Note)."""
    if not pairs:
        room.record(Note(kind="skipped", text=f"{name}: no preference pairs, nothing to train"))
        return None
    return room.trainer.train.submit(request("dpo", name, pairs, settings, cfg, base=start), pairs, train)


