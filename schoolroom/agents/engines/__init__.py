"""Generation engines behind one interface: hf (default), openai, reference, vllm (optional extra)."""

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt

__all__ = ["Completion", "Engine", "Params", "Prompt"]
