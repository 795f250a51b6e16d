"""Ray placement: an agent whose config asks for a custom resource runs on the node that has it."""

from __future__ import annotations

import pytest

from schoolroom.agents.runtime import spawn
from schoolroom.config import AgentConfig, Resources, RuntimeConfig

pytestmark = pytest.mark.ray


def test_custom_resource_places_the_agent_on_its_node():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # this test brings its own two-node cluster; later tests start a plain local Ray again
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "object_store_memory": 100_000_000})
    gpu_box = cluster.add_node(num_cpus=1, resources={"teacher_box": 1}, object_store_memory=100_000_000)
    try:
        ray.init(address=cluster.address, logging_level="warning")
        cluster.wait_for_nodes()
        rt = RuntimeConfig(address=cluster.address)
        teacher = spawn("teacher", AgentConfig(role="teacher", engine="reference",
                                               resources=Resources(num_cpus=0, custom={"teacher_box": 1})), rt)
        verifier = spawn("verifier", AgentConfig(role="verifier", resources=Resources(num_cpus=1)), rt)
        assert teacher.node_id() == gpu_box.node_id
        # the custom resource is held: a second agent asking for it cannot be placed until the first is gone
        assert ray.available_resources().get("teacher_box", 0) == 0
        assert verifier.node_id() in {n["NodeID"] for n in ray.nodes()}
        teacher.kill()
        verifier.kill()
    finally:
        ray.shutdown()
        cluster.shutdown()
