"""The Explorer (Self-Explore): find the first pit of a wrong attempt by rolling out from its step prefixes.

For a wrong attempt with steps s1..sn, k completions are sampled from the prefix s1..st; the
step reward r_t is the fraction that reach the gold answer, and the first pit is the first step
t with r_t = 0 (s1..s_{t-1} could still reach the answer, s1..st cannot). Then a step-level
pair: prompt = the problem + s1..s_{t-1}, rejected = s_t, chosen = the *shortest* correct
completion from that same prefix (one not already chosen for this problem), as the authors'
``form_gpair``; a pit at step 1 takes a correct solution of the problem (``partners``) as chosen.
The completer is this agent's engine: the student's model and adapter (the paper's default) or,
by config, a teacher's model (its oracle-completer ablation).

Only what is measured is a number: the prefixes rolled out are s1..s_{n-1} (the whole wrong
attempt is known to be wrong, not measured), so ``rewards[n-1]`` is None, and an attempt whose
every rolled-out prefix still reached the answer has no measured pit. The authors drop it ("not
actually rejected from the explorer's viewpoint"): ``unmeasured = "drop"``, the default;
``unmeasured = "last_step"`` puts its pit at the last step (a deduction, recorded as such).

``search = "linear"`` looks at t = 1, 2, ... until the pit (as the paper). ``search = "binary"``
bisects between the question (taken as reachable: the problem has a correct solution) and the
wrong attempt: fewer rollouts when correctness only falls along the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from schoolroom.agents.base import batched, role
from schoolroom.agents.engines import Completion
from schoolroom.agents.student import Student, solve_prompt
from schoolroom.environment import answers_match, extract_answer
from schoolroom.messages import Attempt, Message, PreferencePair, Problem, StepRewards

UNMEASURED = ("drop", "last_step")


def prefix_of(steps: tuple[str, ...], t: int) -> str:
    return "".join(s + "\n" for s in steps[:t])


@dataclass
class _Search:
    attempt: Attempt
    problem: Problem
    how: str
    r: dict[int, float] = field(default_factory=dict)  # prefix length t (1..n-1) -> fraction correct
    correct: dict[int, list[str]] = field(default_factory=dict)  # t -> the correct completions from prefix t
    lo: int = 0  # the longest prefix known to reach the answer (0: the question)
    hi: int = 0  # the shortest prefix known (or, at n, deduced) to fail
    tokens: int = 0
    rollouts: int = 0

    def __post_init__(self):
        self.n = len(self.attempt.steps)
        self.hi = self.n

    def next(self) -> int | None:
        """The prefix length to roll out from next, or None when the search is over."""
        if self.how == "linear":
            t = max(self.r, default=0) + 1
            return None if (self.r and self.r[max(self.r)] == 0) or t >= self.n else t
        return None if self.hi - self.lo <= 1 else (self.lo + self.hi) // 2

    def observe(self, t: int, completions: list[Completion]) -> None:
        prefix = prefix_of(self.attempt.steps, t)
        ok = [c.text for c in completions if answers_match(extract_answer(prefix + c.text), self.problem.answer)]
        self.r[t] = len(ok) / len(completions)
        self.tokens += sum(c.completion_tokens for c in completions)
        self.rollouts += len(completions)
        if ok:
            self.correct[t] = sorted(ok, key=len)  # the authors choose the short one
            self.lo = max(self.lo, t)
        else:
            self.hi = min(self.hi, t)

    def pit(self, unmeasured: str = "drop") -> int | None:
        """First pit as a prefix length t (1..n): the step s_t; None when no rolled-out prefix failed and
        ``unmeasured`` is "drop" (or the attempt has no steps)."""
        if self.n == 0:
            return None
        if self.how == "linear":
            t = next((t for t in sorted(self.r) if self.r[t] == 0), None)
        else:
            t = self.hi if self.hi in self.r else None
        return t if t is not None else (self.n if unmeasured == "last_step" else None)

    def messages(self, sender: str, partner: Attempt | None = None, unmeasured: str = "drop",
                 used: set[str] | None = None) -> list[Message]:
        """The StepRewards, and the step-level pair when a pit was found and a chosen side is at hand; ``used``:
        the chosen sides already taken for this problem (updated)."""
        a, p, t = self.attempt, self.problem, self.pit(unmeasured)
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
    def explore(self, attempts: list[Attempt], problems: list[Problem], k: int = 4, search: str = "linear",
                temperature: float = 0.7, max_tokens: int | None = None,
                partners: list[Attempt | None] | None = None, unmeasured: str = "drop") -> list[Message]:
        """StepRewards for every attempt, and a step-level PreferencePair wherever a first pit was found.

        ``partners[i]``: a correct attempt of the same problem as ``attempts[i]`` (the chosen side when the pit
        is the first step; without one such a pit gives no pair).
        """
        if search not in ("linear", "binary"):
            raise ValueError(f"search must be linear or binary, not {search!r}")
        if unmeasured not in UNMEASURED:
            raise ValueError(f"unmeasured must be one of {', '.join(UNMEASURED)}, not {unmeasured!r}")
        partners = partners or [None] * len(attempts)
        if len(partners) != len(attempts):
            raise ValueError(f"{len(partners)} partners for {len(attempts)} attempts")
        by_id = {p.problem_id: p for p in problems}
        searches = [_Search(a, by_id[a.problem_id], search) for a in attempts]
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
                for m in s.messages(self.name, partner, unmeasured, used.setdefault(s.problem.problem_id, set()))]
