"""Build the engine an agent's config names; optional engines are imported only when used."""

from __future__ import annotations

from schoolroom.agents.engines.base import Engine
from schoolroom.config import AgentConfig


def make_engine(c: AgentConfig) -> Engine:
    if c.engine == "hf":
        from schoolroom.agents.engines.hf import HFEngine

        return HFEngine(c.model, device=c.device, dtype=c.dtype, batch_size=c.batch_size)
    if c.engine == "reference":
        from schoolroom.agents.engines.reference import ReferenceEngine

        return ReferenceEngine()
    if c.engine == "openai":
        from schoolroom.agents.engines.openai import OpenAIEngine

        return OpenAIEngine(c.model, base_url=c.base_url, api_key_env=c.api_key_env, timeout_s=c.timeout_s,
                            max_retries=c.max_retries, concurrency=c.concurrency, extra_body=c.extra_body,
                            backoff_s=c.backoff_s, max_backoff_s=c.max_backoff_s)
    if c.engine == "vllm":
        from schoolroom.agents.engines.vllm import VLLMEngine

        return VLLMEngine(c.model, dtype=c.dtype, max_model_len=c.max_model_len,
                          gpu_memory_utilization=c.gpu_memory_utilization,
                          tensor_parallel_size=c.tensor_parallel_size, enable_lora=c.enable_lora,
                          max_lora_rank=c.max_lora_rank)
    raise ValueError(f"unknown engine {c.engine!r}: hf, openai, reference or vllm")
