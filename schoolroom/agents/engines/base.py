"""The one small interface every generation engine implements.

Batched prompts in, ``n`` completions per prompt out, each with its token counts. A prompt
is a chat plus an optional ``prefix``: the start of the assistant's answer (the teacher's
first steps), which the completion continues. ``task`` and ``problem`` let the reference
engine answer from the dataset's human solution.
"""

from __future__ import annotations

import abc
from typing import Any

import msgspec

from schoolroom.messages import Problem


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    messages: list[dict[str, str]]
    prefix: str = ""
    task: str = ""
    args: dict[str, Any] = {}
    problem: Problem | None = None


class Params(msgspec.Struct, frozen=True, kw_only=True):
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_after: str = ""  # end the completion at the first line break after this marker (e.g. "####")
    seed: int = 0


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    latency_s: float = 0.0
    # the tokens as sampled (with the stop token when generation stopped on it; a stop string's cut leaves the
    # ids up to the token that completed it) and the log-probability of each under the distribution it was
    # drawn from (the logits at the sampling temperature, over the top-p nucleus); None where the engine has none
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


class Engine(abc.ABC):
    """Generates completions; ``name`` is the engine kind, ``model`` what it runs."""

    name: str = ""
    model: str = ""
    adapter: str | None = None  # version of the adapter in use, None = base model

    @abc.abstractmethod
    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order.

        At temperature 0 the n completions are one generation repeated (generated once, billed once).
        ``prompt_tokens`` counts the prompt where the engine read it: on the first completion of each prompt for
        local engines (hf, vllm), on every completion for the openai engine (each sample is its own request).
        """

    def score(self, prompts: list[Prompt], completions: list[tuple[int, ...]]) -> list[tuple[float, ...]]:
        """The log-probability of each token of ``completions[i]`` after ``prompts[i]`` under this model (its raw
        distribution, temperature 1): a teacher grading the tokens a student wrote."""
        raise TypeError(f"the {self.name} engine cannot score tokens: give this agent a local model (hf or vllm)")

    def load_adapter(self, version: str, path: str) -> None:
        raise TypeError(f"the {self.name} engine cannot load adapters")

    def unload_adapter(self) -> None:
        self.adapter = None

    def close(self) -> None:
        pass


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text a local model sees: the chat template with the generation header, then the answer's prefix."""
    text = tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
    return text + prompt.prefix


def cut_at_stop(text: str, params: Params) -> tuple[str, bool]:
    """Text up to the first stop string (dropped) or the line break after ``stop_after``; and whether it was cut."""
    cuts = [i for i in (text.find(s) for s in params.stop) if i >= 0]
    if params.stop_after:
        i = text.find(params.stop_after)
        j = text.find("\n", i + len(params.stop_after)) if i >= 0 else -1
        if j >= 0:
            cuts.append(j)
    if not cuts:
        return text, False
    return text[:min(cuts)], True
