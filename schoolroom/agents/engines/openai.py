"""Any OpenAI-compatible chat endpoint, through the ``openai`` client.

Retries with exponential backoff and jitter (tenacity) on 429, 5xx, timeouts and connection
errors; a request timeout; at most ``concurrency`` requests in flight; token usage counted.
The API key is read from the environment variable the config names and never appears in a
log, a message or an exception this engine raises.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt, cut_at_stop


class EngineError(RuntimeError):
    pass


def _retryable(e: BaseException) -> bool:
    import openai

    if isinstance(e, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                      openai.InternalServerError)):
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code == 429 or e.status_code >= 500)


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_retries: int = 6, concurrency: int = 4, extra_body: dict | None = None,
                 backoff_s: float = 0.5, max_backoff_s: float = 20.0):
        import openai

        key = os.environ.get(api_key_env)
        if not key:
            raise EngineError(f"the openai engine reads its API key from ${api_key_env}, which is not set")
        self._secret = key
        self.model = model
        self.base_url = base_url
        self.client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.extra_body = dict(extra_body or {})
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._errors = 0
        self._lock = threading.Lock()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def pop_errors(self) -> int:
        with self._lock:
            n, self._errors = self._errors, 0
        return n

    def _count_error(self, state: RetryCallState) -> None:
        with self._lock:
            self._errors += 1

    def _one(self, prompt: Prompt, params: Params, sample: int) -> Completion:
        messages = list(prompt.messages)
        if prompt.prefix:  # the answer must start with the guidance: ask the server to continue it
            messages.append({"role": "assistant", "content": prompt.prefix})
        kwargs = dict(model=self.model, messages=messages, max_tokens=params.max_tokens,
                      temperature=params.temperature, top_p=params.top_p)
        if params.stop:
            kwargs["stop"] = list(params.stop)[:4]
        if params.temperature > 0:
            kwargs["seed"] = params.seed + sample
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        t0 = time.perf_counter()
        retrying = Retrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(self.max_retries + 1),
                            wait=wait_random_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
                            before_sleep=self._count_error, reraise=True)
        try:
            resp = retrying(self.client.chat.completions.create, **kwargs)
        except Exception as e:
            raise EngineError(self._scrub(f"{self.base_url or 'OpenAI'} model {self.model}: {type(e).__name__}: "
                                          f"{e} (after {self.max_retries} retries at most)")) from None
        choice = resp.choices[0]
        text = choice.message.content or ""
        if prompt.prefix and text.startswith(prompt.prefix):
            text = text[len(prompt.prefix):]
        text, stopped = cut_at_stop(text, params)
        usage = resp.usage
        return Completion(text=text, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                          completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                          finish_reason="stop" if stopped else (choice.finish_reason or ""),
                          latency_s=time.perf_counter() - t0)

    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        # servers differ on n>1: ask n times when sampling; greedy, once (n copies of one reply)
        samples = params.n if params.temperature > 0 else 1
        jobs = [(i, s) for i in range(len(prompts)) for s in range(samples)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            results = list(pool.map(lambda job: self._one(prompts[job[0]], params, job[1]), jobs))
        out: list[list[Completion]] = [[] for _ in prompts]
        for (i, _), c in zip(jobs, results):
            out[i].append(c)
        return [cs * (params.n // samples) for cs in out]

    def close(self) -> None:
        self.client.close()
