"""One Registry behind every decorator: a name taken by another module is refused naming both, the same thing
registered again replaces, errors list the members, and what an engine registers is all the core asks of it."""

from __future__ import annotations

import msgspec
import pytest

from schoolroom.agents.base import ROLES
from schoolroom.agents.engines.factory import ENGINES, describe, engine
from schoolroom.agents.verifier import SCORERS
from schoolroom.classroom.loading import PROTOCOLS
from schoolroom.config import AgentConfig
from schoolroom.messages import MESSAGES
from schoolroom.registry import Registry
from schoolroom.training.aggregate import AGGREGATIONS
from schoolroom.training.kinds import TRAINING_KINDS, training_kind


def first():
    pass


def defined(name: str, module: str, file: str):
    """Function ``name`` as module ``module`` defines it from file ``file``."""
    scope = {"__name__": module}
    exec(compile(f"def {name}():\n    pass\n", file, "exec"), scope)
    return scope[name]


def test_a_name_taken_by_another_module_is_refused_naming_both():
    r: Registry = Registry("widget")
    r.register("w", first)
    r.register("w", first)  # the same again (a module reloaded): replaces
    with pytest.raises(ValueError, match=r"widget name 'w' is taken by \S*test_registry.first; "
                                         r"mylab.widgets.first cannot have it too"):
        r.register("w", defined("first", "mylab.widgets", "/lab/mylab/widgets.py"))
    assert list(r) == ["w"] and r["w"] is first and r.unknown("v") == "unknown widget 'v'; known: w"


def test_a_file_loaded_twice_replaces_its_own_but_never_takes_a_built_in_name():
    r: Registry = Registry("widget")
    r.register("w", defined("fn", "schoolroom_plugin_widgets_1234", "/lab/widgets.py"))
    again = defined("fn", "widgets", "/lab/widgets.py")  # the same file imported as a module
    assert r.register("w", again) is again and r["w"] is again
    r.register("b", defined("fn", "schoolroom.widgets", "/site/schoolroom/widgets.py"))
    with pytest.raises(ValueError, match="taken by schoolroom.widgets.fn"):
        r.register("b", defined("fn", "widgets", "/lab/widgets.py"))


@pytest.mark.parametrize("registry, name", [(ROLES, "student"), (MESSAGES, "attempt"), (TRAINING_KINDS, "sft"),
                                            (ENGINES, "hf"), (SCORERS, "answer"), (AGGREGATIONS, "min"),
                                            (PROTOCOLS, "reinforce")])
def test_every_decorator_registers_into_a_registry(registry, name):
    import schoolroom.api  # noqa: F401  (the built-in roles, kinds, scorers)
    from schoolroom.plugins import load_builtin

    load_builtin()
    assert isinstance(registry, Registry) and name in registry
    with pytest.raises(ValueError, match="is taken by"):
        registry.register(name, test_every_decorator_registers_into_a_registry)


def test_an_engine_says_what_the_core_needs_of_it():
    assert ENGINES["vllm"].whole and ENGINES["vllm"].package == "vllm" and ENGINES["openai"].api_key
    assert not ENGINES["reference"].local_model and not ENGINES["hf"].whole
    assert describe(AgentConfig(role="teacher", engine="reference")) == "gold solutions (reference)"

    @engine("echo-test", package="no_such_package_here", install="pip install echo", whole=True)
    def echo(c):
        raise AssertionError("not built in this test")

    try:
        from schoolroom.classroom import preflight
        from schoolroom.classroom.handles import AgentHandle
        from schoolroom.config import Config

        c = AgentConfig(role="student", engine="echo-test")
        assert AgentHandle(None, "s", c, None).whole  # cut only to feed replicas, as vLLM's calls
        problems = preflight._agents(Config(agents={"s": c}))
        assert problems == ["agents.s: engine 'echo-test' needs the no_such_package_here package, which is not "
                            "installed (pip install echo)"]
    finally:
        ENGINES.unregister("echo-test")


def test_any_registered_training_kind_can_be_an_rl_arm():
    from schoolroom.protocols.reinforce import Arm

    with pytest.raises(msgspec.ValidationError, match="unknown training kind 'rloo'; known: sft"):
        msgspec.convert({"name": "x", "algorithm": "rloo"}, Arm)

    @training_kind("rloo")
    def rloo(t, request, data, problems, out):
        return {}

    try:
        arm = msgspec.convert({"name": "x", "algorithm": "rloo", "settings": {"learning_rate": 1e-5}}, Arm)
        assert arm.algorithm == "rloo"
    finally:
        TRAINING_KINDS.unregister("rloo")
