"""The Explorer finds a known first pit with both searches on the real model; which rollouts count, the whole
attempt's rollout (the authors') and the departures from it, and its pair and drop rules."""

from __future__ import annotations

from typing import get_args

import pytest

from schoolroom.agents.engines import Completion
from schoolroom.agents.explorer import Explorer, Unmeasured, _Search, one_of, dedupe_pairs, prefix_of, reaches
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
@pytest.mark.parametrize("search,unmeasured", [("linear", "rollout"), ("binary", "drop")])
def test_explorer_finds_the_corrupted_middle_step(hf_engine, search, unmeasured):
    explorer = Explorer("explorer", AgentConfig(role="explorer", max_tokens=40, seed=5), engine=hf_engine)
    out = explorer.explore([CORRUPTED], [PROBLEM], k=16, search=search, temperature=0.5, partners=[RIGHT],
                           unmeasured=unmeasured)
    (rewards,) = [m for m in out if isinstance(m, StepRewards)]
    (pair,) = [m for m in out if isinstance(m, PreferencePair)]
    assert rewards.first_pit == 1 and rewards.search == search
    # the completer states the answer from the uncorrupted prefix and never after the corrupted step; the last
    # step (the whole wrong attempt) is not looked at, the pit coming first, so it has no number
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
ONES = {t: 1 for t in range(1, 8)}


@pytest.mark.parametrize("rates,unmeasured,linear,binary", [
    # prefix length t -> fraction right (t = 8: the whole wrong attempt, rolled out only under "rollout");
    # expected (pit, prefixes looked at) for each search
    ({1: 1, 2: 1, 3: .5, 4: .25, 5: 0, 6: 0, 7: 0, 8: 0}, "rollout", (5, [1, 2, 3, 4, 5]), (5, [4, 6, 5])),
    ({1: 1, 2: 1, 3: .5, 4: .25, 5: 0, 6: 0, 7: 0}, "drop", (5, [1, 2, 3, 4, 5]), (5, [4, 6, 5])),
    ({t: 0 for t in range(1, 9)}, "rollout", (1, [1]), (1, [4, 2, 1])),
    # every earlier prefix reaches the answer, the whole attempt does not: the authors measure a pit at its last
    # step; "drop" never looks there; "last_step" deduces it
    (ONES | {8: 0}, "rollout", (8, list(range(1, 9))), (8, [4, 6, 7, 8])),
    (ONES, "drop", (None, list(range(1, 8))), (None, [4, 6, 7])),
    (ONES, "last_step", (8, list(range(1, 8))), (8, [4, 6, 7])),
    (ONES | {8: 1}, "rollout", (None, list(range(1, 9))), (None, [4, 6, 7, 8])),  # not even the whole: no pit
    (ONES | {2: 0, 8: 1}, "rollout", (2, [1, 2]), (None, [4, 6, 7, 8])),  # not monotone
])
def test_search_order_and_pits(rates, unmeasured, linear, binary):
    attempt = Attempt(problem_id="test/pens", text="", steps=STEPS, answer="1")
    for how, (pit, expected) in (("linear", linear), ("binary", binary)):
        s, looked = _Search(attempt, PROBLEM, how, unmeasured), []
        while (t := s.next()) is not None:
            looked.append(t)
            fake(rates)(s, t)
        assert (s.pit(), looked) == (pit, expected), how
        msgs = s.messages("explorer", partner=RIGHT)
        assert msgs[0].first_pit == (None if pit is None else pit - 1)
        assert [t for t, x in enumerate(msgs[0].rewards, 1) if x is not None] == sorted(looked), \
            "exactly the measured prefixes have numbers"
        assert len(msgs) == (1 if pit is None else 2), "a pair wherever a pit was found"
        if pit == 8:
            assert msgs[1].rejected == "step 7" and msgs[1].prefix == prefix_of(STEPS, 7) and msgs[1].step == 7


def test_the_whole_attempt_is_rolled_out_unless_a_departure_is_asked_for():
    attempt = Attempt(problem_id="test/pens", text="", steps=STEPS[:3], answer="1")
    runs = {}
    for unmeasured in get_args(Unmeasured):
        s = _Search(attempt, PROBLEM, "linear", unmeasured)
        while (t := s.next()) is not None:
            fake({1: 1, 2: .5, 3: 0})(s, t)
        runs[unmeasured] = s.messages("explorer")
    rewards, pair = runs["rollout"]
    assert rewards.rewards == (1.0, 0.5, 0.0) and rewards.first_pit == 2, "the authors: a measured pit at the last step"
    assert pair.rejected == "step 2" and pair.prefix == "step 0\nstep 1\n" and pair.chosen == "#### 8"
    (dropped,) = runs["drop"]
    assert dropped.first_pit is None and dropped.rewards == (1.0, 0.5, None) and dropped.rollouts == 8
    rewards, pair = runs["last_step"]
    assert rewards.first_pit == 2 and rewards.rewards == (1.0, 0.5, None), "deduced, still not a measured number"
    assert pair.rejected == "step 2" and pair.prefix == "step 0\nstep 1\n"
    with pytest.raises(ValueError, match="unmeasured must be one of rollout, drop, last_step"):
        one_of("unmeasured", "deduce", Unmeasured)  # what explore() checks first


def test_a_rollout_counts_only_where_its_own_text_states_the_answer():
    # the prefix ends on the gold number and a cut completion's last number is the gold too: neither states it
    attempt = Attempt(problem_id="test/pens", text="", steps=("So she has 6 + 2 = 8", "#### 12"), answer="12")
    s = _Search(attempt, PROBLEM, "linear")
    unanswered = ["", " pens.", "She has 2 blue pens, so 6 + 2 = 8", "8"]
    s.observe(1, [Completion(text=x, completion_tokens=3) for x in unanswered])
    assert s.r[1] == 0 and s.pit() == 1, "a rollout cut before it states an answer is not a correct one"
    answered = ["#### 8", "So the answer is 8.", "\\boxed{8}", "#### 12", "So 8 pens.\n#### 8"]
    s.observe(2, [Completion(text=x, completion_tokens=3) for x in answered])
    assert s.r[2] == 0.8 and s.correct[2] == ["#### 8", "\\boxed{8}", "So 8 pens.\n#### 8", "So the answer is 8."]
    assert not reaches("Mia has 6 + 2 = 8", "8") and reaches("#### 8", "8") and not reaches("#### 12", "8")


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
