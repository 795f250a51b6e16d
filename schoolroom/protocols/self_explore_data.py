"""Self-Explore's data rules, as the authors' code (``gen/get_rft_data.py``, ``gen/get_dpo_data.py``): which correct
samples RFT keeps (those whose equations hold, deduplicated by their equations) and how outcome-level pairs are
formed (each correct sample against the most different wrong one)."""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any

from schoolroom.api import Attempt, DPOConfig, PreferencePair, Problem, Rationale


def as_rationale(a: Attempt) -> Rationale:
    return Rationale(problem_id=a.problem_id, text=a.prefix + a.text, steps=a.steps, answer=a.answer, source="rft",
                     parents=(a.id,))


_LHS = set("-0123456789.,()+*/×÷x ")
_RHS = re.compile(r"\s*-?[\d.,]+")


def _equation_strings(text: str) -> list[str]:
    """The matches of ``[C]*\\d[C]*=\\s*-?[\\d.,]+`` (C: digits, spaces, . , ( ) + - * / × ÷ x), left to right,
    found in linear time (the regex takes cubic time on a long run of digits and spaces, as degenerate samples
    write)."""
    found, pos = [], 0
    while (eq := text.find("=", pos)) >= 0:
        start = eq
        while start > pos and text[start - 1] in _LHS:
            start -= 1
        rhs = _RHS.match(text, eq + 1)
        if rhs and any(c.isdigit() for c in text[start:eq]):
            found.append(text[start:rhs.end()])
            pos = rhs.end()
        else:
            pos = eq + 1
    return found


def equations(text: str) -> str:
    """What RFT deduplicates on: the solution's equations, spaces removed (the authors' ``match_string``);
    a solution without one by its whitespace-normalised text."""
    found = [e.replace(" ", "").strip(".,") for e in _equation_strings(text)]
    return "|".join(found) if found else " ".join(text.split())


# equations as written in a solution: arithmetic (numbers, + - * / and brackets) around "="
_RUN = re.compile(r"[\d.()+\-*/ =]+")
_LONGEST = 200  # characters: a longer expression is not read
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TIMES = re.compile(r"(?<=[\d)])\s*[x×·]\s*(?=[\d(])")
_FRACTION = re.compile(r"(?<![\d./])(\d+(?:\.\d+)?/\d+(?:\.\d+)?)(?![\d./])")
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def _value(expr: str) -> tuple[Fraction | None, bool] | None:
    """``expr`` as exact arithmetic (numbers, + - * /, brackets; a value of None: it divides by zero) and whether
    it has an operator; None when it is anything else. Parsed with ``ast`` and evaluated on the tree's numbers
    only: model output is never run."""
    expr = expr.strip()
    if not expr or len(expr) > _LONGEST:
        return None
    expr = _FRACTION.sub(r"(\1)", expr)  # "60 / 3/4" is 60 / (3/4), as people write it
    try:
        tree = ast.parse(expr, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    operated = False

    def walk(node) -> Fraction:
        nonlocal operated
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(ast.get_source_segment(expr, node) or str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            operated = True
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise TypeError(type(node).__name__)

    try:
        return walk(tree), operated
    except TypeError:
        return None
    except ZeroDivisionError:  # "5 / 0 = 0": arithmetic, and false
        return None, True


def _end(part: str, side: str) -> tuple[Fraction | None, bool, str] | None:
    """The expression at one end of ``part`` (its value, whether it has an operator, its text), or None where it
    cannot be read for sure. ``side`` "tail": the end of the part, the left side of the "=" after it; "head": its
    start, the right side of the "=" before it. The whole part, else a piece cut at a space where a sentence
    ends ("= 7. 5 + 1 =" holds two sentences' numbers); never a piece of a longer number ("1 1/2", "3 000")."""
    part = part.strip()
    if side == "tail":
        part = part.lstrip("(") if part.count("(") > part.count(")") else part
        cuts = [(part, "")] + [(part[i + 1:], part[:i].rstrip()) for i in range(max(0, len(part) - _LONGEST - 1),
                                                                                  len(part)) if part[i] == " "]
    else:
        part = part.rstrip(")") if part.count(")") > part.count("(") else part
        cuts = [(part, "")] + [(part[:i], part[i + 1:].lstrip()) for i in reversed(range(min(len(part), _LONGEST + 1)))
                               if part[i] == " "]
    for cut, rest in cuts:
        cut = cut.strip()
        if rest and not (rest.endswith((".", ")")) if side == "tail" else cut.endswith(".") or rest[0] in "()"):
            continue  # the expression may go on into the rest
        if side == "head":
            cut = cut.rstrip(".")
        elif cut[:1] in ("*", "/", "+"):
            return None  # "cm * 2/3 = 48": its left operand is words
        v = _value(cut)
        if v is not None:
            return v[0], v[1], cut
    return None


# a word before an expression that makes it part of a longer one: "35 questions x 2/5 = 14", "3/4 of 60 = 45"
_OPERATOR_WORDS = {"x", "times", "of", "plus", "minus", "by", "per", "divided", "multiplied", "over", "into",
                   "than", "less", "more", "*", "/", "+", "-"}


def _equal(left: Fraction | None, right: Fraction | None, written: str) -> bool:
    """The authors' ``check_equation`` (|lhs - rhs| < 1e-3), and a right side rounded as written ("10 / 3 = 3.33")."""
    if left is None or right is None:  # a division by zero
        return False
    if abs(left - right) < Fraction(1, 1000):
        return True
    m = re.fullmatch(r"-?\d*\.(\d+)", written.strip())
    return bool(m) and abs(left - right) <= Fraction(1, 2 * 10 ** len(m.group(1)))


def false_equations(text: str) -> list[str]:
    """The equations written in ``text`` that do not hold. An equation is judged where arithmetic stands on both
    sides of an "=" in a chain with an operator ("2 * 3 = 6", "2 * 3 = 6 * 1 = 6", "1,200 / 4 = 300", "3 x 4 = 12",
    "$12 / 4 = $3"); where words, units or "%" may be part of a side it is not ("50% of 20 = 10", "3/4 of 60 = 45",
    "72 cm * 2/3 = 48", "20 / 100 = 20%", "5A/5", "1 1/2")."""
    text = _TIMES.sub(" * ", _THOUSANDS.sub("", text.replace("÷", "/").replace("−", "-").replace("–", "-")))
    text = re.sub(r"\$(?=\d)", "", text)
    bad = []
    for run in _RUN.finditer(text):
        parts = run.group().split("=")
        i = 0
        while i < len(parts) - 1:  # a chain: consecutive parts with a digit each
            j = i
            while j < len(parts) and any(c.isdigit() for c in parts[j]):
                j += 1
            if j - i >= 2:
                bad += _false_in_chain(parts[i:j], text[: run.start()].rstrip() if i == 0 else "",
                                       text[run.end():] if j == len(parts) else "")
            i = max(j, i + 1)
    return bad


def _false_in_chain(parts: list[str], before: str, after: str) -> list[str]:
    """The false equations of "parts[0] = parts[1] = ...", ``before`` and ``after`` it the text around."""
    pairs = [[_end(parts[i], "tail"), _end(parts[i + 1], "head")] for i in range(len(parts) - 1)]
    words, glued = before.split(), not parts[0][:1].isspace()
    if (glued and (before[-1:].isalnum() or before[-1:] == ":")) or (words and words[-1].lower() in _OPERATOR_WORDS) \
            or (parts[0].strip()[:1] == "-" and before[-1:].isalnum()) \
            or (re.search(r"\d\s+and$", before) and re.match(r"\s*\d+\s*/\s*\d", parts[0])):
        pairs[0][0] = None  # "D3 = ", "6:00+48 = ", "2/5 of 60 = ", "books - 20 = ", "1 and 1/4 = ": it goes on
    if pairs[0][0] is not None and not pairs[0][0][1] and before[-1:].isalpha():
        pairs[0][0] = None  # "Week 4 = 48 + 48": a bare number after a word is a label or has a unit
    if (not parts[-1][-1:].isspace() and after[:1].isalnum()) or after.lstrip()[:1] == "%" or \
            re.match(r"\s*and\s+\d+\s*/\s*\d", after):
        pairs[-1][1] = None  # "= 5A", "= 2/5th", "= 20%", "= 5 and 2/3": the right side goes on
    if not any(side[1] for pair in pairs for side in pair if side is not None):
        return []  # no operator anywhere: "of 20 = 10" is words around numbers
    return [f"{parts[i].strip()} = {parts[i + 1].strip()}" for i, (left, right) in enumerate(pairs)
            if left is not None and right is not None and not _equal(left[0], right[0], right[2])]


def equations_hold(text: str) -> bool:
    """The authors' ``is_eq_correct``: every equation written in ``text`` holds (a text without one passes).
    The authors check GSM8K's ``<<lhs=rhs>>`` calculator notes with ``eval``; this reads the equations written
    inline (the project's solutions carry no notes; ``<<6*2=12>>`` is read too), parsed, never run."""
    return not false_equations(text)


def rft_keep(correct: list[Attempt], at_most: int, check_equations: bool = True) -> list[Attempt]:
    """The authors' RFT filter (``collect_rft_data_gsm8k``): per problem, correct samples of a text not seen before
    (a repeat of any earlier sample is dropped, kept or not, as the authors' ``set(preds)``), whose equations hold
    (``check_equations``, the authors' ``is_eq_correct``), one per equation string (of two with the same equations
    the one farther from the others by edit distance), at most ``at_most``."""
    from rapidfuzz.distance import Levenshtein

    by_problem: dict[str, dict[str, Attempt]] = {}
    seen: dict[str, set[str]] = {}
    for a in correct:
        kept, texts = by_problem.setdefault(a.problem_id, {}), seen.setdefault(a.problem_id, set())
        text = a.prefix + a.text
        if text in texts:
            continue
        texts.add(text)
        if check_equations and not equations_hold(text):
            continue
        key = equations(text)
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


def dpo_settings(cfg: Any) -> dict[str, DPOConfig]:
    """Each DPO setting by the suffix of its adapters' names: "" for ``dpo``, "@learning_rate=2e-05,beta=0.5"
    for a sweep point (the keys it sets over ``dpo``)."""
    return {"": cfg.dpo} | {"@" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in point.items()): cfg.dpo.merged(point)
                            for point in cfg.dpo_sweep}
