"""Build the engine an agent's config names; optional engines are imported only when used.

An engine is a registered function from the agent's config to an :class:`Engine`; a new one is declared
where it is written and a config names it (``engine = "tgi"``)::

    @engine("tgi")
    def tgi(c: AgentConfig) -> Engine: return TGIEngine(c.model, c.base_url)
"""

from __future__ import annotations

from collections.abc import Callable

from schoolroom.agents.engines.base import Engine
from schoolroom.config import AgentConfig

ENGINES: dict[str, Callable[[AgentConfig], Engine]] = {}


def engine(name: str):
    """Declare ``fn(agent_config) -> Engine`` as engine ``name``."""

    def register(fn: Callable[[AgentConfig], Engine]) -> Callable[[AgentConfig], Engine]:
        ENGINES[name] = fn
        return fn

    return register


def make_engine(c: AgentConfig) -> Engine:
    if c.engine not in ENGINES:
        raise ValueError(f"unknown engine {c.engine!r}; known: {', '.join(ENGINES)}")
    return ENGINES[c.engine](c)


@engine("hf")
def hf(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.hf import HFEngine

    return HFEngine(c.model, device=c.device, dtype=c.dtype, batch_size=c.batch_size)


@engine("reference")
def reference(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.reference import ReferenceEngine

    return ReferenceEngine()


@engine("openai")
def openai(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.openai import OpenAIEngine

    return OpenAIEngine(c.model, base_url=c.base_url, api_key_env=c.api_key_env, timeout_s=c.timeout_s,
                        max_retries=c.max_retries, concurrency=c.concurrency, extra_body=c.extra_body,
                        backoff_s=c.backoff_s, max_backoff_s=c.max_backoff_s)


@engine("vllm")
def vllm(c: AgentConfig) -> Engine:
    from schoolroom.agents.engines.vllm import VLLMEngine

    return VLLMEngine(c.model, dtype=c.dtype, max_model_len=c.max_model_len,
                      gpu_memory_utilization=c.gpu_memory_utilization, tensor_parallel_size=c.tensor_parallel_size,
                      enable_lora=c.enable_lora, max_lora_rank=c.max_lora_rank)
