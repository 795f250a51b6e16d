"""The Explorer finds a known first pit with both searches, on the real model."""

from __future__ import annotations

import pytest

from schoolroom.agents.explorer import Explorer, _Search
from schoolroom.agents.engines import Completion
from schoolroom.config import AgentConfig
from schoolroom.messages import Attempt, PreferencePair, Problem, StepRewards

PROBLEM = Problem(problem_id="test/pens", dataset="test", answer="8",
                  question="Mia has 6 red pens and 2 blue pens. How many pens does Mia have?",
                  gold_steps=("Mia has 6 red pens.", "She has 2 blue pens.", "So she has 6 + 2 = 8 pens."))
# the gold solution with its last step corrupted: the first pit is step 2 (0-based)
CORRUPTED = Attempt(problem_id="test/pens", text="", answer="9",
                    steps=("Mia has 6 red pens.", "She has 2 blue pens.", "So she has 6 + 2 = 9 pens."))


@pytest.mark.slow
@pytest.mark.parametrize("search", ["linear", "binary"])
def test_explorer_finds_the_corrupted_step(hf_engine, search):
    explorer = Explorer("explorer", AgentConfig(role="explorer", max_tokens=40, seed=1), engine=hf_engine)
    out = explorer.explore([CORRUPTED], [PROBLEM], k=16, search=search, temperature=0.5)
    (rewards,) = [m for m in out if isinstance(m, StepRewards)]
    (pair,) = [m for m in out if isinstance(m, PreferencePair)]
    assert rewards.first_pit == 2 and rewards.search == search
    # the completer reaches the answer from every uncorrupted prefix
    assert rewards.start > 0 and rewards.rewards[1] > 0 and rewards.rewards[2] == 0.0
    assert rewards.rollouts == 16 * 3 and rewards.tokens > 0
    assert pair.prefix == "Mia has 6 red pens.\nShe has 2 blue pens.\n" and pair.rejected == CORRUPTED.steps[2]
    assert "8" in pair.chosen and pair.step == 2 and pair.parents == (CORRUPTED.id, PROBLEM.id)


def fake(rates: dict[int, float]):
    """Observations as if the fraction ``rates[t]`` of 4 rollouts from prefix t were right (logic unit test)."""
    def observe(search: _Search, t: int):
        right = int(rates[t] * 4)
        search.observe(t, [Completion(text="#### 8", completion_tokens=3)] * right +
                       [Completion(text="#### 1", completion_tokens=3)] * (4 - right))
    return observe


@pytest.mark.parametrize("rates,linear,binary", [
    # prefix length t -> fraction right; expected (pit, prefixes looked at) for each search
    ({0: 1, 1: 1, 2: 1, 3: .5, 4: .25, 5: 0, 6: 0, 7: 0}, (5, [0, 1, 2, 3, 4, 5]), (5, [0, 4, 6, 5])),
    ({0: 1, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0}, (1, [0, 1]), (1, [0, 4, 2, 1])),
    ({0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}, (8, [0, 1, 2, 3, 4, 5, 6, 7]), (8, [0, 4, 6, 7])),
    ({0: 0, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}, (None, [0]), (None, [0])),
    ({0: 1, 1: 1, 2: 0, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}, (2, [0, 1, 2]), (8, [0, 4, 6, 7])),  # not monotone
])
def test_search_order_and_pits(rates, linear, binary):
    steps = tuple(f"step {i}" for i in range(8))
    attempt = Attempt(problem_id="test/pens", text="", steps=steps, answer="1")
    for how, (pit, expected) in (("linear", linear), ("binary", binary)):
        s, looked = _Search(attempt, PROBLEM, how), []
        while (t := s.next()) is not None:
            looked.append(t)
            fake(rates)(s, t)
        assert (s.pit(), looked) == (pit, expected), how
        msgs = s.messages("explorer")
        assert msgs[0].first_pit == (None if pit is None else pit - 1)
        assert len(msgs) == (1 if pit is None else 2), "a pair wherever a pit was found"
