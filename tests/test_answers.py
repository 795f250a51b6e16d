"""Answer extraction, equivalence (a table of cases, both ways) and step splitting."""

from __future__ import annotations

import pytest

from schoolroom.environment import answers_match, extract_answer, split_steps

EQUIVALENCE = [
    # GSM8K-style numbers
    ("18", "18", True),
    ("18.0", "18", True),
    ("18.00", "18", True),
    ("018", "18", True),
    ("17", "18", False),
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("1,234,567", "1234567", True),
    ("1,000", "100", False),
    ("-5", "-5", True),
    ("-5", "5", False),
    ("+5", "5", True),
    (".5", "0.5", True),
    ("3.14", "3.14", True),
    ("3.14", "3.1415", False),
    ("1e3", "1000", False),  # scientific notation is not how these datasets write answers
    # money
    ("$18", "18", True),
    ("$18.00", "18", True),
    ("$ 1,250", "1250", True),
    ("\\$18", "18", True),
    ("$18.50", "18.5", True),
    ("$18.50", "18", False),
    ("18 dollars", "18", True),
    # units
    ("5 apples", "5", True),
    ("12 hours.", "12", True),
    ("12 km", "13", False),
    # percentages
    ("75%", "75", True),
    ("75 %", "75", True),
    ("75\\%", "75", True),
    ("75 percent", "75", True),
    ("25%", "75", False),
    # fractions vs decimals
    ("1/2", "0.5", True),
    ("0.5", "1/2", True),
    ("3/4", "0.75", True),
    ("\\frac{3}{4}", "0.75", True),
    ("\\dfrac{3}{4}", "3/4", True),
    ("2/4", "1/2", True),
    ("1/3", "0.33", False),
    ("5/2", "2.5", True),
    ("-(1/3)", "-1/3", True),
    # LaTeX (MATH) through math-verify
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{2}", True),
    ("\\sqrt{12}", "2\\sqrt{3}", True),
    ("2\\sqrt{3}", "3\\sqrt{2}", False),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("(3, \\pi)", "(3,\\frac{\\pi}{2})", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("\\frac{1}{2}", "0.5", True),
    ("10^\\circ", "10", True),
    ("\\text{(C)}", "\\text{(C)}", True),
    # text answers (ASDiv) and missing answers
    ("Mrs. Hilt", "Mrs. Hilt", True),
    ("mrs. hilt", "Mrs. Hilt", True),
    ("They are equal", "Mrs. Hilt", False),
    (None, "18", False),
    ("", "18", False),
    ("eighteen", "18", False),
]


@pytest.mark.parametrize("predicted,gold,expected", EQUIVALENCE)
def test_answers_match(predicted, gold, expected):
    assert answers_match(predicted, gold) is expected


def test_table_is_large_and_two_sided():
    assert len(EQUIVALENCE) >= 40
    assert sum(e for *_, e in EQUIVALENCE) >= 15 and sum(not e for *_, e in EQUIVALENCE) >= 15


EXTRACTION = [
    ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18"),
    ("#### 1,000", "1,000"),
    ("#### 5 + 3 = 8", "8"),
    ("so #### 5. Then #### 7.", "7"),
    ("Therefore the answer is $\\boxed{\\frac{\\pi}{2}}$.", "\\frac{\\pi}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("So she has 12 + 5 = 17 apples. The answer is 17.", "17"),
    ("The answer is: $18.50.", "$18.50"),
    ("The final answer is 3/4", "3/4"),
    ("The answer is 5 + 3 = 8.", "8"),
    ("The answer is Ellen.", "Ellen"),
    ("He had 12, bought 5, and now has 17 apples in total.", "17"),
    ("It costs 3.5 dollars.", "3.5"),
    ("I don't know.", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("text,expected", EXTRACTION)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_strict_extraction_needs_a_stated_answer():
    assert extract_answer("He had 12, bought 5, and now has 17 apples.", strict=True) is None
    assert extract_answer("so the answer is 17.", strict=True) == "17"
    assert extract_answer("#### 17", strict=True) == "17"


def test_extracted_answers_match_gold():
    assert answers_match(extract_answer("The answer is: $18.50."), "18.5")
    assert answers_match(extract_answer("So the total is 1,250 dollars."), "1250")


def test_split_steps():
    assert split_steps("Tom has 2 + 3 = 5.\n\n He eats 1.\n#### 4") == ["Tom has 2 + 3 = 5.", "He eats 1.", "#### 4"]
    assert split_steps("Tom has 2.5 kg. Then he eats 1. So 1.5 are left.") == [
        "Tom has 2.5 kg.", "Then he eats 1.", "So 1.5 are left."]
    assert split_steps("   ") == []
    # fewer lines than asked for: every line is split into sentences
    assert split_steps("Tom has 2. He eats 1.\nSo 1 is left.", at_least=3) == ["Tom has 2.", "He eats 1.", "So 1 is left."]


def test_a_teachers_steps_leave_out_the_answer_line():
    from schoolroom.agents.teacher import solution_steps

    assert solution_steps("Tom has 2 + 3 = 5.\nHe eats 1.\n#### 4") == ["Tom has 2 + 3 = 5.", "He eats 1."]
    # one line of steps and the answer line: the steps are its sentences
    assert solution_steps("Tom has 2 + 3 = 5. He eats 1.\n#### 4") == ["Tom has 2 + 3 = 5.", "He eats 1."]
