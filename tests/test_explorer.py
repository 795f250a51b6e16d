"""The Explorer finds a known first pit with both searches on the real model, and its pair and drop rules."""

from __future__ import annotations

import pytest

from schoolroom.agents.engines import Completion
from schoolroom.agents.explorer import Explorer, _Search, dedupe_pairs
from schoolroom.config import AgentConfig
from schoolroom.messages import Attempt, PreferencePair, Problem, StepRewards

PROBLEM = Problem(problem_id="test/pens", dataset="test", answer="8",
                  question="Mia has 6 red pens and 2 blue pens. How many pens does Mia have?",
                  gold_steps=("Mia has 6 red pens.", "She has 2 blue pens.", "So she has 6 + 2 = 8 pens."))
# the gold solution with its middle step corrupted (and the last one following it): the first pit is step 1
# (0-based), not the last step where an unmeasured fallback would put it
CORRUPTED = Attempt(problem_id="test/pens", text="", answer="12",
                    steps=("Mia has 6 red pens.", "Mia has 6 * 2 = 12 pens.", "So she has 12 pens."))
RIGHT = Attempt(problem_id="test/pens", text="6 + 2 = 8\n#### 8", answer="8", steps=("6 + 2 = 8", "#### 8"))


@pytest.mark.slow
@pytest.mark.parametrize("search", ["linear", "binary"])
def test_explorer_finds_the_corrupted_middle_step(hf_engine, search):
    explorer = Explorer("explorer", AgentConfig(role="explorer", max_tokens=40, seed=5), engine=hf_engine)
    out = explorer.explore([CORRUPTED], [PROBLEM], k=16, search=search, temperature=0.5, partners=[RIGHT])
    (rewards,) = [m for m in out if isinstance(m, StepRewards)]
    (pair,) = [m for m in out if isinstance(m, PreferencePair)]
    assert rewards.first_pit == 1 and rewards.search == search
    # the completer reaches the answer from the uncorrupted prefix and never after the corrupted step; the last
    # step (the whole wrong attempt) is not rolled out, so it has no number
    assert rewards.rewards[0] > 0 and rewards.rewards[1] == 0.0 and rewards.rewards[2] is None
    assert rewards.start is None and rewards.rollouts == 16 * 2 and rewards.tokens > 0
    assert pair.prefix == "Mia has 6 red pens.\n" and pair.rejected == CORRUPTED.steps[1]
    assert "8" in pair.chosen and pair.step == 1 and pair.parents == (CORRUPTED.id, PROBLEM.id)


def fake(rates: dict[int, float], texts: dict[int, list[str]] | None = None):
    """Observations as if the fraction ``rates[t]`` of 4 rollouts from prefix t were right (logic unit test)."""
    def observe(search: _Search, t: int):
        right = int(rates[t] * 4)
        ok = (texts or {}).get(t, ["#### 8"] * right)
        search.observe(t, [Completion(text=x, completion_tokens=3) for x in ok] +
                       [Completion(text="#### 1", completion_tokens=3)] * (4 - len(ok)))
    return observe


STEPS = tuple(f"step {i}" for i in range(8))


@pytest.mark.parametrize("rates,linear,binary", [
    # prefix length t -> fraction right; expected (pit, prefixes looked at) for each search; t = 8 (the whole
    # wrong attempt) is never rolled out
    ({1: 1, 2: 1, 3: .5, 4: .25, 5: 0, 6: 0, 7: 0}, (5, [1, 2, 3, 4, 5]), (5, [4, 6, 5])),
    ({1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0}, (1, [1]), (1, [4, 2, 1])),
    ({1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}, (None, [1, 2, 3, 4, 5, 6, 7]), (None, [4, 6, 7])),
    ({1: 1, 2: 0, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}, (2, [1, 2]), (None, [4, 6, 7])),  # not monotone
])
def test_search_order_and_pits(rates, linear, binary):
    attempt = Attempt(problem_id="test/pens", text="", steps=STEPS, answer="1")
    for how, (pit, expected) in (("linear", linear), ("binary", binary)):
        s, looked = _Search(attempt, PROBLEM, how), []
        while (t := s.next()) is not None:
            looked.append(t)
            fake(rates)(s, t)
        assert (s.pit(), looked) == (pit, expected), how
        msgs = s.messages("explorer", partner=RIGHT)
        assert msgs[0].first_pit == (None if pit is None else pit - 1)
        assert msgs[0].rewards[-1] is None and None not in [msgs[0].rewards[t - 1] for t in looked], \
            "exactly the measured prefixes have numbers"
        assert len(msgs) == (1 if pit is None else 2), "a pair wherever a pit was found"


def test_an_attempt_with_no_measured_pit_is_dropped_unless_deduction_is_asked_for():
    attempt = Attempt(problem_id="test/pens", text="", steps=STEPS[:3], answer="1")
    s = _Search(attempt, PROBLEM, "linear")
    while (t := s.next()) is not None:
        fake({1: 1, 2: .5})(s, t)
    dropped = s.messages("explorer")
    assert len(dropped) == 1 and dropped[0].first_pit is None and dropped[0].rewards == (1.0, 0.5, None)
    rewards, pair = s.messages("explorer", unmeasured="last_step")
    assert rewards.first_pit == 2 and rewards.rewards == (1.0, 0.5, None), "deduced, still not a measured number"
    assert pair.rejected == "step 2" and pair.prefix == "step 0\nstep 1\n"


def test_chosen_is_the_shortest_correct_completion_not_already_chosen():
    attempt = Attempt(problem_id="test/pens", text="", steps=STEPS[:4], answer="1")
    s = _Search(attempt, PROBLEM, "linear")
    texts = {1: ["so 6 + 2 = 8\n#### 8", "#### 8", "8 pens\n#### 8"]}
    while (t := s.next()) is not None:
        fake({1: .75, 2: 0}, texts)(s, t)
    used: set[str] = set()
    _, first = s.messages("explorer", used=used)
    assert first.chosen == "#### 8" and first.rejected == "step 1"
    _, second = s.messages("explorer", used=used)
    assert second.chosen == "8 pens\n#### 8", "the shortest is taken: the next shortest"


def test_a_pit_at_the_first_step_takes_a_correct_solution_as_chosen():
    attempt = Attempt(problem_id="test/pens", text="", steps=STEPS[:3], answer="1")
    s = _Search(attempt, PROBLEM, "linear")
    fake({1: 0})(s, s.next())
    rewards, pair = s.messages("explorer", partner=RIGHT)
    assert rewards.first_pit == 0 and pair.prefix == "" and pair.chosen == RIGHT.text and RIGHT.id in pair.parents
    assert len(s.messages("explorer")) == 1, "no correct solution at hand: no pair"


def test_pairs_are_deduplicated_per_problem():
    def pair(pid, chosen, rejected):
        return PreferencePair(problem_id=pid, prompt="q", chosen=chosen, rejected=rejected)
    pairs = [pair("a", "c1", "r1"), pair("a", "c1", "r2"), pair("a", "c2", "r1"), pair("a", "c3", "r3"),
             pair("b", "c1", "r1")]
    assert [(x.problem_id, x.chosen, x.rejected) for x in dedupe_pairs(pairs)] == \
        [("a", "c1", "r1"), ("a", "c3", "r3"), ("b", "c1", "r1")]
