"""Final-answer extraction from model text, answer equivalence, and step splitting.

Numbers are compared exactly as numbers (commas, ``$``, units, ``%``, fractions vs decimals);
anything else (LaTeX from MATH) goes through math-verify; plain text falls back to a
normalized string comparison (ASDiv has answers such as ``"Mrs. Hilt"``).
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

from schoolroom.messages import Problem, Rationale

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUMBER_IN_TEXT = re.compile(rf"(?<![\w.])\$?\s?(?:{_NUM})(?:\s*/\s*\d+)?%?")
_ANSWER_IS = re.compile(
    r"answer\s*(?:is|=|:)\s*:?\s*(.+?)(?:\.\s|\.?$|\n|,\s|;)", re.IGNORECASE | re.MULTILINE
)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``), with nested braces."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def extract_answer(text: str | None, strict: bool = False) -> str | None:
    """The final answer in ``text``: ``#### x``, then ``\\boxed{x}``, then "the answer is x", then (unless
    ``strict``) the last number."""
    if not text:
        return None
    if "####" in text:
        said = text.rsplit("####", 1)[1].split("\n", 1)[0].strip().rstrip(".").strip()
        said = said.rsplit("=", 1)[-1].strip()  # "#### 5 + 3 = 8" states 8
        if said:
            return said
    boxed = last_boxed(text)
    if boxed:
        return boxed
    m = _ANSWER_IS.findall(text)
    if m:
        said = m[-1].strip().strip("*").strip()
        said = said.rsplit("=", 1)[-1].strip()  # "the answer is 5 + 3 = 8" states 8
        nums = _NUMBER_IN_TEXT.findall(said)
        if nums:
            return nums[0].strip()
        if said:
            return said
    nums = [] if strict else _NUMBER_IN_TEXT.findall(text)
    if nums:
        return nums[-1].strip()
    return None


_LATEX_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_UNIT_TAIL = re.compile(r"^(.*?\d)\s*(?:%|\\%|percent)?\s*(?:[a-zA-Z][a-zA-Z.\s]*)?$")


def to_number(s: str | None) -> Fraction | None:
    """Parse a numeric answer (``$1,000.50``, ``75%``, ``3/4``, ``\\frac{3}{4}``, ``12 apples``); None if not numeric."""
    if s is None:
        return None
    t = s.strip().strip("$").strip()
    t = re.sub(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\^\{?\\circ\}?|\\[,;! ]", "", t)
    t = t.replace("\\$", "").replace("$", "").replace("\\%", "%").strip().rstrip(".").strip()
    m = _LATEX_FRAC.match(t)
    if m:
        a, b = to_number(m.group(1)), to_number(m.group(2))
        return a / b if a is not None and b not in (None, 0) else None
    m = _UNIT_TAIL.match(t)
    if m:
        t = m.group(1).strip()
    t = t.rstrip("%").strip()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", t):
        t = t.replace(",", "")
    if "/" in t:
        num, _, den = t.partition("/")
        a, b = _plain(num), _plain(den)
        return a / b if a is not None and b not in (None, 0) else None
    return _plain(t)


def _plain(t: str) -> Fraction | None:
    t = t.strip().replace(" ", "")
    if re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", t):
        return Fraction(t)
    return None


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip("$").strip().rstrip(".").lower())


def _math_verify(predicted: str, gold: str) -> bool:
    from math_verify import parse, verify

    # math-verify times out with SIGALRM, which only the main thread may use
    timeout = 5 if threading.current_thread() is threading.main_thread() else None

    def wrap(s: str):
        s = s.strip()
        return s if "$" in s or "\\boxed" in s else f"${s}$"

    try:
        g = parse(wrap(gold), parsing_timeout=timeout)
        p = parse(wrap(predicted), parsing_timeout=timeout)
        return bool(g and p and verify(g, p, timeout_seconds=timeout))
    except Exception:  # math-verify raises on odd LaTeX; not equal is the honest answer
        return False


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """True when ``predicted`` states the same answer as ``gold``."""
    if predicted is None or gold is None or not str(predicted).strip():
        return False
    predicted, gold = str(predicted), str(gold)
    a, b = to_number(predicted), to_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))
    if _norm_text(predicted) == _norm_text(gold):
        return True
    if a is not None or b is not None or "\\" in predicted + gold or any(c in predicted + gold for c in "^_{}()"):
        return _math_verify(predicted, gold)
    return False


def solution_text(steps, answer) -> str:
    """A worked solution in the form students are taught: one step a line, then ``#### answer``."""
    return "\n".join(tuple(steps) + (f"#### {answer}",))


def gold_rationale(p: Problem) -> Rationale:
    """A problem's reference solution as a Rationale to train on."""
    return Rationale(problem_id=p.problem_id, text=solution_text(p.gold_steps, p.answer), steps=p.gold_steps,
                     answer=p.answer, source="gold", parents=(p.id,))


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def split_steps(text: str, at_least: int = 2) -> list[str]:
    """Split a solution into steps: one line a step; an answer of fewer than ``at_least`` lines (by default a
    single paragraph) is split into sentences instead."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < at_least:
        lines = [s.strip() for ln in lines for s in _SENTENCE.split(ln) if s.strip()]
    return lines


def numbers(text: str) -> list[Fraction]:
    """The numbers written in ``text``, in order (commas in thousands ignored)."""
    found = (to_number(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", "")))
    return [n for n in found if n is not None]


def departs_from_gold(problem: Problem, steps) -> int | None:
    """Where a solution first leaves the gold one, read from the numbers alone: the index of the first step whose
    last number is neither a gold step's result nor in the question; None when no step's is."""
    known = {n for s in problem.gold_steps for n in numbers(s)[-1:]} | set(numbers(problem.question))
    return next((i for i, s in enumerate(steps) if numbers(s)[-1:] and numbers(s)[-1] not in known), None)
