"""The call path on its own: inline, an echo role with no model, a log in memory. Calls are cut into keyed pieces,
logged in the order asked, answered from the log without asking again (unless the agent's state or the arguments
changed), and the items of side_by_side take turns in a fixed order. Call keys are what they were, so runs made
before a change still resume and replay."""

from __future__ import annotations

from typing import Annotated

import pytest
from msgspec.structs import replace

from schoolroom.agents.base import Agent, batched, effect, role
from schoolroom.classroom.callpath import NotInLog, Replaying
from schoolroom.classroom.handles import AgentHandle
from schoolroom.classroom.keys import call_key
from schoolroom.classroom.memo import RemadeDiffers, differs
from schoolroom.classroom.room import Classroom
from schoolroom.config import KEY, AgentConfig, Config, RuntimeConfig, declared
from schoolroom.environment import synthetic
from schoolroom.log import Memory
from schoolroom.messages import Call, Note, TrainRequest

PROBLEMS = synthetic(5, steps=1, seed=0)
ASKED: list[tuple[str, list[str]]] = []  # (method, problem ids) of every call the echo agent really answered


@role("echo")
class Echo(Agent):
    uses_engine = False
    loaded = ""

    @batched("problems")
    def shout(self, problems: list, suffix: str = "!") -> list[Note]:
        ASKED.append(("shout", [p.problem_id for p in problems]))
        return [Note(kind="echo", text=p.question.upper()[:20] + suffix + self.loaded, problem_id=p.problem_id)
                for p in problems]

    def count(self, problems: list) -> int:
        ASKED.append(("count", [p.problem_id for p in problems]))
        return len(problems)

    @effect
    def load(self, version: str) -> None:
        self.loaded = version


def room(previous: list = (), replaying: Replaying | None = None, chunk: int = 2) -> Classroom:
    cfg = Config(agents={"echo": AgentConfig(role="echo")}, runtime=RuntimeConfig(address="inline", chunk_size=chunk))
    return Classroom(cfg, Memory(), "run-1", previous=list(previous), replaying=replaying)


@pytest.fixture(autouse=True)
def fresh():
    ASKED.clear()


def calls(r: Classroom) -> list[Call]:
    return [m for m in r.calls.log.messages if isinstance(m, Call)]


def test_a_call_is_cut_keyed_logged_and_answered_again_from_the_log_without_asking():
    first = room()
    echo = first.agent("echo", Echo)
    out = echo.shout(PROBLEMS)
    assert [n.problem_id for n in out] == [p.problem_id for p in PROBLEMS]
    assert ASKED == [("shout", [p.problem_id for p in PROBLEMS[i:i + 2]]) for i in (0, 2, 4)]  # chunk_size 2
    assert echo.count(PROBLEMS) == 5
    logged = first.calls.log.messages
    assert [(c.method, len(c.outputs)) for c in calls(first)] == [("shout", 2), ("shout", 2), ("shout", 1),
                                                                    ("count", 0)]
    assert len({c.key for c in calls(first)}) == 4
    notes = [m for m in logged if isinstance(m, Note)]
    assert [n.id for n in notes] == [n.id for n in out] and all(n.run_id == "run-1" for n in notes)

    ASKED.clear()
    again = room(previous=logged)  # a resumed run: the same calls come from the log, none is asked
    echo = again.agent("echo", Echo)
    assert [n.id for n in echo.shout(PROBLEMS)] == [n.id for n in out] and echo.count(PROBLEMS) == 5
    assert ASKED == [] and again.answered == 4 and again.calls.log.messages == []

    assert echo.shout(PROBLEMS[:2], suffix="?")[0].text.endswith("?")  # other arguments: asked
    echo.load("v2")  # the agent's state changed: the same question is asked again
    assert echo.shout(PROBLEMS[:2])[0].text.endswith("!v2")
    assert ASKED == [("shout", [p.problem_id for p in PROBLEMS[:2]])] * 2


def test_a_resumed_run_asks_only_the_piece_the_crash_lost():
    first = room()
    first.agent("echo", Echo).shout(PROBLEMS)
    log = first.calls.log.messages
    second_piece = calls(first)[1]
    cut = [m for m in log if m.id != second_piece.id and m.id not in second_piece.outputs]
    ASKED.clear()
    resumed = room(previous=cut)
    out = resumed.agent("echo", Echo).shout(PROBLEMS)
    assert ASKED == [("shout", [p.problem_id for p in PROBLEMS[2:4]])]
    assert [n.problem_id for n in out] == [p.problem_id for p in PROBLEMS] and resumed.answered == 2


def test_a_message_remade_with_other_content_under_a_logged_id_is_refused_not_swapped_for_the_logs():
    first = room()
    first.agent("echo", Echo).count(PROBLEMS)
    log = first.calls.log.messages
    changed = [replace(PROBLEMS[0], question="What is 2 + 2?"), *PROBLEMS[1:]]  # the same id, other content
    with pytest.raises(RemadeDiffers, match=rf"Problem {PROBLEMS[0].id} again .*question \"What is 2 \+ 2\?\""):
        room(previous=log).agent("echo", Echo).count(changed)
    ASKED.clear()
    assert room(previous=log).agent("echo", Echo).count(PROBLEMS) == 5 and ASKED == [], "remade alike: answered"
    request = TrainRequest(kind="sft", name="a", hyper={"max_steps": 8})
    assert differs(request, replace(request, hyper={"max_steps": 8, "lr": 1e-4})) is None, "defaults filled in since"
    assert differs(request, replace(request, kind="grpo")) == 'kind "grpo", the log\'s "sft"'
    assert differs(request, replace(request, hyper={})) is not None
    logged = TrainRequest(kind="sft", name="a", hyper={"alpha": 32, "loss": None, "norm": None, "ids": [1, 2]})
    remade = {"alpha": 32.0, "loss": float("nan"), "norm": float("inf"), "ids": (1, 2)}
    assert differs(logged, replace(logged, hyper=remade)) is None, \
        "as the log holds them: numbers by value, NaN and infinities as null, tuples as lists"
    assert differs(logged, replace(logged, hyper=remade | {"alpha": 32.5})) is not None


def test_side_by_side_items_take_turns_in_a_fixed_order():
    r = room(chunk=0)

    def item(i: int) -> int:
        echo = r.agent("echo", Echo)
        with r.stage(f"item {i}"):
            for p in PROBLEMS[:3]:
                echo.count([p] * (i + 1))
        return i

    assert r.side_by_side(item, [0, 1]) == [0, 1]
    counts = [c.value for c in calls(r)]
    assert counts == [1, 2, 1, 2, 1, 2], "item 0 and item 1 alternate, whatever answers first"
    assert r.round == 0 and r.calls.turns is None


def test_side_by_side_items_each_ask_in_the_state_they_loaded():
    """Two items load their own adapter into one agent and ask it: each is answered in its own state (an effect
    call keeps the turn, so the item's next call goes out before the other item loads)."""
    r = room(chunk=0)

    def item(version: str) -> list[str]:
        echo = r.agent("echo", Echo)
        texts = []
        for _ in range(2):
            echo.load(version)
            texts += [n.text for n in echo.shout(PROBLEMS[:2])]
        return texts

    a, b = r.side_by_side(item, ["A", "B"])
    assert all(t.endswith("!A") for t in a) and all(t.endswith("!B") for t in b)
    assert len([x for x in ASKED if x[0] == "shout"]) == 2, \
        "asked once in each state (the same question in the same state again is answered from the log)"


def test_an_item_asking_in_another_items_state_is_an_error():
    r = room(chunk=0)

    def item(version: str) -> str:
        echo = r.agent("echo", Echo)
        if version == "A":
            echo.load(version)
        echo.count(PROBLEMS[:1])  # the turn passes: B asks without loading, in A's state
        return echo.shout(PROBLEMS[:1])[0].text

    with pytest.raises(RuntimeError, match="after item 0 changed it .*load .* again in this item"):
        r.side_by_side(item, ["A", "B"])


def test_replay_asks_no_agent_and_names_the_first_call_the_log_lacks():
    first = room()
    first.agent("echo", Echo).count(PROBLEMS)
    ASKED.clear()
    replay = room(previous=first.calls.log.messages, replaying=Replaying("the log was written by another version"))
    assert replay.agent("echo", Echo).count(PROBLEMS) == 5 and ASKED == []
    with pytest.raises(NotInLog, match=r"echo.count \(round 0\).*after 1 calls answered from it: the log was"):
        replay.agent("echo", Echo).count(PROBLEMS[:2])


def test_call_keys_are_what_they_were():
    """A change to how keys are made (arguments, settings that count, the state) would make every old run ask its
    calls again on resume, and fail to replay: these keys were computed before the call path was split. (``dtype``
    was then float32 by default, as every run's resolved config.toml of that time says; now it is ``auto``.)"""
    handle = AgentHandle(None, "student", AgentConfig(role="student", dtype="float32"), None)
    assert call_key("student", "solve", 1, (PROBLEMS[:2],), {"n": 4}, [handle.settings, None]) == \
        KEY_SOLVE
    assert call_key("student", "load", 0, ("sft-r0-842d47",), {}, [handle.settings, ["load", [None], {}]]) == \
        KEY_LOAD


KEY_SOLVE = "951b72eb6baea0a92cac54e2"
KEY_LOAD = "0f3d578e5f74cd98f8844d57"


def test_every_agent_and_runtime_setting_declares_what_it_does_to_call_keys():
    for cls in (AgentConfig, RuntimeConfig):
        assert declared(cls, "call_key") + declared(cls, "resumable") is not None  # raises on an undeclared field
    assert "max_tokens" in declared(AgentConfig, "call_key") and "base_url" in declared(AgentConfig, "resumable")
    assert "replicas" not in declared(AgentConfig, "call_key") + declared(AgentConfig, "resumable")

    class Later(AgentConfig, frozen=True, kw_only=True):  # a field added later, its declaration forgotten
        top_k: int = 0

    with pytest.raises(TypeError, match="Later.top_k does not declare what it does to call keys"):
        declared(Later, "call_key")

    class Declared(AgentConfig, frozen=True, kw_only=True):
        top_k: Annotated[int, KEY] = 0

    assert declared(Declared, "call_key")[-1] == "top_k"
