"""Self-Explore's data rules, as the authors' code: which correct samples RFT keeps (deduplicated by their
equations) and how outcome-level pairs are formed (each correct sample against the most different wrong one)."""

from __future__ import annotations

import re

from schoolroom.api import Attempt, PreferencePair, Problem, Rationale


def as_rationale(a: Attempt) -> Rationale:
    return Rationale(problem_id=a.problem_id, text=a.prefix + a.text, steps=a.steps, answer=a.answer, source="rft",
                     parents=(a.id,))


_EQUATION = re.compile(r"[-\d.,()+*/×÷x ]*\d[-\d.,()+*/×÷x ]*=\s*-?[\d.,]+")


def equations(text: str) -> str:
    """What RFT deduplicates on: the solution's equations, spaces removed (the authors' ``match_string``);
    a solution without one by its whitespace-normalised text."""
    found = [m.group().replace(" ", "").strip(".,") for m in _EQUATION.finditer(text)]
    return "|".join(found) if found else " ".join(text.split())


def rft_keep(correct: list[Attempt], at_most: int) -> list[Attempt]:
    """The authors' RFT filter: per problem, correct samples of distinct text, one per equation string (of two
    with the same equations the one farther from the others by edit distance), at most ``at_most``."""
    from rapidfuzz.distance import Levenshtein

    by_problem: dict[str, dict[str, Attempt]] = {}
    for a in correct:
        kept = by_problem.setdefault(a.problem_id, {})
        if any(b.text == a.text for b in kept.values()):
            continue
        key = equations(a.prefix + a.text)
        if key in kept:
            others = [b.text for k, b in kept.items() if k != key]
            if sum(Levenshtein.distance(a.text, o) for o in others) <= \
                    sum(Levenshtein.distance(kept[key].text, o) for o in others):
                continue
        kept[key] = a
    return [a for kept in by_problem.values() for a in list(kept.values())[:at_most]]


def outcome_pairs(problems: list[Problem], correct: list[Attempt], wrong: list[Attempt]) -> list[PreferencePair]:
    """Outcome-level pairs as the authors' ``get_dpo_data`` (GSM8K): each correct sample of a problem against
    the distinct wrong sample of the problem farthest from it by edit distance; a wrong sample is used once.
    ``parents`` = (chosen attempt, rejected attempt)."""
    from rapidfuzz.distance import Levenshtein

    question = {p.problem_id: p.question for p in problems}
    pool: dict[str, list[Attempt]] = {}
    for a in wrong:
        texts = pool.setdefault(a.problem_id, [])
        if all(b.text != a.text for b in texts):
            texts.append(a)
    out = []
    for good in correct:
        bads = pool.get(good.problem_id, [])
        if not bads:
            continue
        bad = max(reversed(bads), key=lambda b: Levenshtein.distance(good.text, b.text))  # ties: the latest
        bads.remove(bad)
        out.append(PreferencePair(problem_id=good.problem_id, prompt=question[good.problem_id],
                                  chosen=good.prefix + good.text, rejected=bad.prefix + bad.text, level="outcome",
                                  parents=(good.id, bad.id)))
    return out
