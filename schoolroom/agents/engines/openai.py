"""Any OpenAI-compatible chat endpoint, through the ``openai`` client.

Retries with exponential backoff and jitter (tenacity) on 429, 5xx, timeouts and connection
errors (not on a TLS certificate refused); a request timeout; at most ``concurrency`` requests in
flight; token usage counted. A request that fails for good says the endpoint, the cause in words
(connection refused, host unknown, TLS, timeout, HTTP status) and how many tries it took; its
``config_keys`` name the agent settings to fix (the agent's error names them ``agents.NAME.KEY``).
The API key is read from the environment variable the config names and never appears in a
log, a message or an exception this engine raises.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt, cut_at_stop


class EngineError(RuntimeError):
    """A request that failed for good; ``config_keys``: the agent settings that would fix it (may be empty)."""

    config_keys: tuple[str, ...] = ()


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it, outermost first (the client wraps httpx, which wraps the socket's error)."""
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 16:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _retryable(e: BaseException) -> bool:
    import openai

    if any(isinstance(x, ssl.SSLCertVerificationError) for x in _chain(e)):
        return False  # a certificate refused is refused again
    if isinstance(e, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                      openai.InternalServerError)):
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code == 429 or e.status_code >= 500)


def explain(e: BaseException, base_url: str, timeout_s: float) -> tuple[str, tuple[str, ...]]:
    """Why a request to ``base_url`` failed, in words, and the agent settings to look at."""
    import openai

    chain = _chain(e)
    where = urlsplit(base_url)
    host = where.hostname or base_url
    port = where.port or (443 if where.scheme == "https" else 80)
    last = chain[-1]
    said = f"{type(last).__name__}: {last}"
    if isinstance(e, openai.APITimeoutError) or any(isinstance(x, TimeoutError) for x in chain):
        return (f"timeout: no answer within timeout_s = {timeout_s:g} s ({type(e).__name__})",
                ("base_url", "timeout_s"))
    if any(isinstance(x, ConnectionRefusedError) for x in chain):
        return f"connection refused: nothing listens at {host}:{port}", ("base_url",)
    if any(isinstance(x, socket.gaierror) for x in chain):
        return f"DNS: the host name {host!r} cannot be resolved ({said})", ("base_url",)
    if any(isinstance(x, ssl.SSLError) for x in chain):
        plain = " (an https URL for a server that speaks plain http?)" if "WRONG_VERSION_NUMBER" in said else ""
        return f"TLS: the secure connection to {host}:{port} failed{plain} ({said})", ("base_url",)
    if isinstance(e, openai.APIConnectionError):
        return f"connection to {host}:{port} failed ({said})", ("base_url",)
    if isinstance(e, openai.APIStatusError):
        keys = {401: ("api_key_env",), 403: ("api_key_env",), 404: ("base_url", "model")}.get(e.status_code, ())
        return f"HTTP {e.status_code}: {type(e).__name__}: {e}", keys
    return f"{type(e).__name__}: {e}", ()


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
        self.timeout_s = timeout_s
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
            endpoint = str(self.client.base_url).rstrip("/")
            why, keys = explain(e, endpoint, self.timeout_s)
            tries, secs = retrying.statistics.get("attempt_number", 1), time.perf_counter() - t0
            took = (f"after {tries - 1} retr{'y' if tries == 2 else 'ies'} in {secs:.1f} s" if tries > 1 else
                    f"in {secs:.1f} s, not retried")
            error = EngineError(self._scrub(f"{endpoint} (model {self.model}): {why}; {took}"))
            error.config_keys = keys
            raise error from None
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
