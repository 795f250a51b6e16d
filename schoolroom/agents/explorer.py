"""The Explorer (Self-Explore): find the first pit of a wrong attempt by rolling out from its step prefixes.

For a wrong attempt with steps s1..sn, k completions are sampled from the prefix s1..st; the
step reward r_t is the fraction whose *own text* states the gold answer (``####``, ``\\boxed{}`` or
"the answer is": a completion cut before it states one is not counted, whatever the last number
it or the prefix wrote; the authors' ``gen_step_explore.py`` reads GSM8K rollouts only after "The
answer is" in the completion), and the first pit is the first step t with r_t = 0 (s1..s_{t-1}
could still reach the answer, s1..st cannot). Then a step-level pair: prompt = the problem +
s1..s_{t-1}, rejected = s_t, chosen = the *shortest* correct completion from that same prefix (one
not already chosen for this problem), as the authors' ``form_gpair``; a pit at step 1 takes a
correct solution of the problem (``partners``) as chosen. The completer is this agent's engine: the
student's model and adapter (the paper's default) or, by config, a teacher's model (its
oracle-completer ablation).

``unmeasured`` says what happens to the last step, the whole wrong attempt s1..sn:

- ``"rollout"`` (the authors, and the ``self_explore`` protocol's default): it is rolled out from
  too, so ``rewards[n-1]`` is measured, and an attempt whose every earlier prefix still reached the
  answer gets a measured pit at its last step when no rollout from the whole attempt does (its pair:
  the shortest correct completion from s1..s_{n-1} against s_n), which ``form_gpair`` keeps. An
  attempt from every prefix of which some rollout still reached the answer, the whole one included,
  has no pit and no pair (``form_gpair``: "rejected is not 'actually' rejected from the explorer's
  viewpoint").
- ``"drop"`` (a departure, and this method's default, so that other callers such as PRM labelling
  keep the answer check's grade of the last step): s1..sn is not rolled out, ``rewards[n-1]`` is None,
  and an attempt whose every rolled-out prefix s1..s_{n-1} still reached the answer has no pit and
  no pair (where the authors could have measured one at s_n).
- ``"last_step"`` (a departure): s1..sn is not rolled out; such an attempt's pit is put at the last
  step (a deduction from the answer check, recorded as such; ``rewards[n-1]`` stays None).

``search = "linear"`` looks at t = 1, 2, ... until the pit (as the paper). ``search = "binary"``
bisects between the question (taken as reachable: the problem has a correct solution) and the
wrong attempt (measured under ``"rollout"``, else taken as failing): fewer rollouts when correctness
only falls along the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import msgspec

from schoolroom.agents.base import batched, role
from schoolroom.agents.engines import Completion
from schoolroom.agents.student import Student, solve_prompt
from schoolroom.environment import answers_match, extract_answer
from schoolroom.messages import Attempt, Message, PreferencePair, Problem, StepRewards

Search = Literal["linear", "binary"]  # the first: the paper's
Unmeasured = Literal["rollout", "drop", "last_step"]  # the first: the authors'; the others: departures (module doc)


def one_of(name: str, value: str, choices) -> None:
    """ValueError unless ``value`` is one of the Literal ``choices``: for a direct call (a protocol's config
    checks its own fields when it is decoded)."""
    if value not in get_args(choices):
        raise ValueError(f"{name} must be one of {', '.join(get_args(choices))}, not {value!r}")


def prefix_of(steps: tuple[str, ...], t: int) -> str:
    return "".join(s + "\n" for s in steps[:t])


def reaches(completion: str, gold: str) -> bool:
    """Whether a rollout reaches the answer: its own text states it (no last-number fallback, nothing read from
    the prefix it continues)."""
    return answers_match(extract_answer(completion, strict=True), gold)


@dataclass
class _Search:
    attempt: Attempt
    problem: Problem
    how: Search
    unmeasured: Unmeasured = "rollout"
    r: dict[int, float] = field(default_factory=dict)  # prefix length t -> fraction correct
    correct: dict[int, list[str]] = field(default_factory=dict)  # t -> the correct completions from prefix t
    lo: int = 0  # the longest prefix known to reach the answer (0: the question)
    hi: int = 0  # the shortest prefix known to fail (n + 1: none yet, under "rollout"; n: deduced, otherwise)
    tokens: int = 0
    rollouts: int = 0

    def __post_init__(self):
        self.n = len(self.attempt.steps)
        self.last = self.n if self.unmeasured == "rollout" else self.n - 1  # the longest prefix rolled out from
        self.hi = self.last + 1

    def next(self) -> int | None:
        """The prefix length to roll out from next, or None when the search is over."""
        if self.how == "linear":
            t = max(self.r, default=0) + 1
            return None if (self.r and self.r[max(self.r)] == 0) or t > self.last else t
        return None if self.hi - self.lo <= 1 else (self.lo + self.hi) // 2

    def observe(self, t: int, completions: list[Completion]) -> None:
        ok = [c.text for c in completions if reaches(c.text, self.problem.answer)]
        self.r[t] = len(ok) / len(completions)
        self.tokens += sum(c.completion_tokens for c in completions)
        self.rollouts += len(completions)
        if ok:
            self.correct[t] = sorted(ok, key=len)  # the authors choose the short one
            self.lo = max(self.lo, t)
        else:
            self.hi = min(self.hi, t)

    def pit(self) -> int | None:
        """First pit as a prefix length t (1..n): the step s_t; None when no rolled-out prefix failed (unless
        ``unmeasured`` is "last_step": then n, deduced) or the attempt has no steps."""
        if self.n == 0:
            return None
        if self.how == "linear":
            t = next((t for t in sorted(self.r) if self.r[t] == 0), None)
        else:
            t = self.hi if self.hi in self.r else None
        return t if t is not None else (self.n if self.unmeasured == "last_step" else None)

    def messages(self, sender: str, partner: Attempt | None = None, used: set[str] | None = None) -> list[Message]:
        """The StepRewards, and the step-level pair when a pit was found and a chosen side is at hand; ``used``:
        the chosen sides already taken for this problem (updated)."""
        a, p, t = self.attempt, self.problem, self.pit()
        rewards = tuple(self.r.get(i) for i in range(1, self.n + 1))
        out: list[Message] = [StepRewards(
            problem_id=p.problem_id, attempt_id=a.id, rewards=rewards, first_pit=None if t is None else t - 1,
            rollouts=self.rollouts, tokens=self.tokens, search=self.how, source="rollouts",
            sender=sender, parents=(a.id, p.id))]
        used = set() if used is None else used
        if t == 1:
            candidates = [partner.prefix + partner.text] if partner is not None else []
        else:
            candidates = self.correct.get((t or 1) - 1, [])
        chosen = next((c for c in candidates if c not in used), None)
        if t is not None and chosen is not None:
            used.add(chosen)
            out.append(PreferencePair(
                problem_id=p.problem_id, prompt=p.question, prefix=prefix_of(a.steps, t - 1),
                chosen=chosen, rejected=a.steps[t - 1], level="step", step=t - 1,
                sender=sender, parents=(a.id, p.id) + ((partner.id,) if t == 1 and partner else ())))
        return out


def dedupe_pairs(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """The authors' last filter: per problem, a pair is kept only if neither its chosen nor its rejected side
    is already in a kept pair."""
    seen: dict[str, tuple[set[str], set[str]]] = {}
    out = []
    for x in pairs:
        chosen, rejected = seen.setdefault(x.problem_id, (set(), set()))
        if x.chosen not in chosen and x.rejected not in rejected:
            chosen.add(x.chosen)
            rejected.add(x.rejected)
            out.append(x)
    return out


@role("explorer")
class Explorer(Student):
    """Rolls out from step prefixes of wrong attempts with its engine (load the student's adapter on it)."""


    @batched("attempts", "partners")
    def explore(self, attempts: list[Attempt], problems: list[Problem], k: int = 4, search: Search = "linear",
                temperature: float = 0.7, max_tokens: int | None = None,
                partners: list[Attempt | None] | None = None, unmeasured: Unmeasured = "drop") -> list[Message]:
        """StepRewards for every attempt, and a step-level PreferencePair wherever a first pit was found.

        ``partners[i]``: a correct attempt of the same problem as ``attempts[i]`` (the chosen side when the pit
        is the first step; without one such a pit gives no pair). ``unmeasured``: "rollout" also rolls out from
        the whole attempt (the authors; the self_explore protocol passes it by default); "drop" (the default
        here, a departure from Self-Explore: the answer check, not a rollout, grades the last step, as PRM
        labelling wants) and "last_step" do not (module docstring).
        """
        one_of("search", search, Search)
        one_of("unmeasured", unmeasured, Unmeasured)
        partners = partners or [None] * len(attempts)
        if len(partners) != len(attempts):
            raise ValueError(f"{len(partners)} partners for {len(attempts)} attempts")
        by_id = {p.problem_id: p for p in problems}
        searches = [_Search(a, by_id[a.problem_id], search, unmeasured) for a in attempts]
        params = self.params(n=k, temperature=temperature, max_tokens=max_tokens, stop_after="####",
                             seed=self.config.seed)
        step = 0
        while True:
            todo = [(s, t) for s in searches if (t := s.next()) is not None]
            if not todo:
                break
            prompts = [solve_prompt(s.problem, prefix_of(s.attempt.steps, t), self.config.system_prompt)
                       for s, t in todo]
            outs = self.generate(prompts, msgspec.structs.replace(params, seed=params.seed + step))
            for (s, t), cs in zip(todo, outs):
                s.observe(t, cs)
            step += 1
        used: dict[str, set[str]] = {}
        return [m for s, partner in zip(searches, partners)
                for m in s.messages(self.name, partner, used.setdefault(s.problem.problem_id, set()))]
