"""Ray placement on a two-node cluster (``ray.cluster_utils``): an agent asking for a custom resource runs on the
node that has it, and a student on one node loads an adapter a trainer made on the other, sent as bytes."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from schoolroom.agents.hosting.actors import Adapters, spawn
from schoolroom.config import AgentConfig, Resources, RuntimeConfig
from schoolroom.environment import synthetic
from schoolroom.messages import Rationale, TrainRequest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # this module brings its own two-node cluster; later tests start a plain local Ray again
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "object_store_memory": 100_000_000,
                                                             "resources": {"head_box": 1}})
    box = cluster.add_node(num_cpus=1, resources={"other_box": 1}, object_store_memory=100_000_000)
    try:
        ray.init(address=cluster.address, logging_level="warning")
        cluster.wait_for_nodes()
        yield cluster, box
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_custom_resource_places_the_agent_on_its_node(two_nodes):
    import ray

    cluster, box = two_nodes
    rt = RuntimeConfig(address=cluster.address)
    teacher = spawn("teacher", AgentConfig(role="teacher", engine="reference",
                                           resources=Resources(num_cpus=0, custom={"other_box": 1})), rt)
    verifier = spawn("verifier", AgentConfig(role="verifier", resources=Resources(num_cpus=0)), rt)
    try:
        assert teacher.node_id() == box.node_id
        # the custom resource is held: a second agent asking for it cannot be placed until the first is gone
        assert ray.available_resources().get("other_box", 0) == 0
        assert verifier.node_id() in {n["NodeID"] for n in ray.nodes()}
    finally:
        teacher.kill()
        verifier.kill()


@pytest.mark.slow
def test_a_student_on_another_node_loads_the_adapter_from_bytes_not_the_trainers_path(two_nodes, tmp_path):
    cluster, box = two_nodes
    rt = RuntimeConfig(address=cluster.address)
    adapters = Adapters()  # what a Classroom shares between its agents
    trainer = spawn("trainer", AgentConfig(role="trainer", resources=Resources(num_cpus=1, custom={"other_box": 1})),
                    rt, workdir=str(tmp_path / "trainer"), adapters=adapters)
    student = spawn("student", AgentConfig(role="student", max_tokens=8,
                                           resources=Resources(num_cpus=1, custom={"head_box": 1})),
                    rt, workdir=str(tmp_path / "student"), adapters=adapters)
    try:
        assert trainer.nodes() != student.nodes()
        problems = synthetic(2, steps=[1], seed=3)
        data = [Rationale(problem_id=p.problem_id, text="#### 42", source="test") for p in problems]
        request = TrainRequest(kind="sft", name="travel", data=tuple(r.id for r in data), seed=0,
                               hyper={"max_steps": 1, "batch_size": 2})
        made, _ = trainer.result(trainer.submit("train", request, data, problems), 600)
        assert made.path.startswith(str(tmp_path / "trainer")) and made.sender == "trainer"
        loaded, side = student.result(student.submit("load", made), 600)
        assert loaded == made.adapter
        copied = [n for n in side if n.kind == "adapter_copied"]
        assert len(copied) == 1 and copied[0].data["node"] == box.node_id and copied[0].data["bytes"] > 10_000
        copy = Path(copied[0].data["path"])
        assert copy.is_relative_to(tmp_path / "student")  # its own working folder, not the trainer's path
        files = [p.name for p in Path(made.path).iterdir()]
        assert "adapter_model.safetensors" in files and not filecmp.dircmp(made.path, copy).diff_files
        attempts, _ = student.result(student.submit("solve", problems[:1]), 600)
        assert attempts[0].adapter == made.adapter
    finally:
        trainer.kill()
        student.kill()
