"""The openai engine against a real OpenAI-compatible HTTP server (llm-katan) on 127.0.0.1.

The echo backend injects HTTP 500s, 429s, 504s and latency; the transformers backend serves
the real SmolLM2 folder. A key passed in must be absent from every file a run writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import KEY_ENV, SECRET, tiny_config

from schoolroom import config as configlib
from schoolroom import log, models
from schoolroom.agents.engines import Params, Prompt
from schoolroom.agents.engines.openai import EngineError, OpenAIEngine
from schoolroom.classroom import runner
from schoolroom.messages import Guidance, Usage


def engine(url: str, **kw) -> OpenAIEngine:
    kw = dict(api_key_env=KEY_ENV, backoff_s=0.01, max_backoff_s=0.05, timeout_s=10, concurrency=4) | kw
    return OpenAIEngine("echo-model", base_url=url, **kw)


PROMPTS = [Prompt(messages=[{"role": "user", "content": f"question {i}"}]) for i in range(12)]


def test_retries_through_injected_500s(katan):
    e = engine(katan("--error-rate", "0.5"), max_retries=12)
    outs = e.generate(PROMPTS, Params(max_tokens=16, n=2))
    assert [len(o) for o in outs] == [2] * 12
    assert all("question" in c.text and c.completion_tokens > 0 for o in outs for c in o)
    assert e.pop_errors() > 0, "half the requests failed with 500 and were retried"


def test_a_greedy_request_for_n_completions_is_sent_once(katan):
    e = engine(katan())
    real, sent = e.client.chat.completions.create, []
    e.client.chat.completions.create = lambda **kw: sent.append(kw) or real(**kw)  # counts the requests it passes on
    outs = e.generate(PROMPTS[:3], Params(max_tokens=8, n=2))
    assert len(sent) == 3 and [len(o) for o in outs] == [2] * 3 and all(o[0] == o[1] for o in outs)
    sent.clear()
    e.generate(PROMPTS[:3], Params(max_tokens=8, n=2, temperature=0.7))
    assert len(sent) == 6, "sampled: n requests each (servers differ on n > 1)"


@pytest.mark.parametrize("flag,status", [("--rate-limit-after", "429"), ("--timeout-after", "504")])
def test_persistent_failure_gives_a_clear_error_without_the_key(katan, flag, status):
    e = engine(katan(flag, "2"), max_retries=3)
    assert len(e.generate(PROMPTS[:2], Params(max_tokens=8))) == 2
    with pytest.raises(EngineError) as info:
        e.generate(PROMPTS[:1], Params(max_tokens=8))
    assert status in str(info.value) and "after 3 retries" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.__context__)
    assert e.pop_errors() == 3


def test_request_timeout_is_retried_then_reported(katan):
    e = engine(katan("--latency-ms", "1500"), timeout_s=0.3, max_retries=1)
    with pytest.raises(EngineError, match=r"timeout: no answer within timeout_s = 0\.3 s \(APITimeoutError\); "
                                          r"after 1 retry") as info:
        e.generate(PROMPTS[:1], Params(max_tokens=8))
    assert info.value.config_keys == ("base_url", "timeout_s")
    assert e.pop_errors() == 1


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_dead_endpoint_says_where_and_why(katan, monkeypatch):
    """Refused, unknown host, TLS to a plain-http server: each named, with the endpoint, fast (few retries),
    and the setting to fix (``config_keys``, which an agent's error names ``agents.NAME.base_url``)."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    port = _closed_port()
    plain = katan()  # a real server that speaks plain http
    cases = {f"http://127.0.0.1:{port}/v1": rf"http://127\.0\.0\.1:{port}/v1 \(model echo-model\): connection "
                                            rf"refused: nothing listens at 127\.0\.0\.1:{port}; after 1 retry",
             "http://no-such-host.invalid/v1": r"http://no-such-host\.invalid/v1 .*DNS: the host name "
                                               r"'no-such-host\.invalid' cannot be resolved",
             plain.replace("http://", "https://"): r"https://127\.0\.0\.1:\d+/v1 .*TLS: the secure connection to "
                                                    r"127\.0\.0\.1:\d+ failed \(an https URL for a server that "
                                                    r"speaks plain http\?\)"}
    for url, said in cases.items():
        e = engine(url, max_retries=1, timeout_s=5)
        with pytest.raises(EngineError, match=said) as info:
            e.generate(PROMPTS[:1], Params(max_tokens=8))
        assert info.value.config_keys == ("base_url",)
        assert SECRET not in str(info.value)


def test_missing_key_is_named_not_printed(monkeypatch):
    monkeypatch.delenv("SCHOOLROOM_NO_SUCH_KEY", raising=False)
    with pytest.raises(EngineError, match=r"\$SCHOOLROOM_NO_SUCH_KEY, which is not set"):
        OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", api_key_env="SCHOOLROOM_NO_SUCH_KEY")


def api_teacher_config(url: str, address: str) -> dict:
    raw = tiny_config(address=address, max_tokens=16)
    raw["agents"]["api"] = {"role": "teacher", "engine": "openai", "model": "echo-model", "base_url": url,
                            "api_key_env": KEY_ENV, "max_tokens": 48, "max_retries": 25, "concurrency": 2,
                            "backoff_s": 0.01, "max_backoff_s": 0.05,
                            "resources": {"num_cpus": 0}}
    raw["protocol"]["teachers"] = ["api"]
    return raw


def assert_secret_absent(run_dir: Path) -> None:
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), f"the API key leaked into {p}"
    assert KEY_ENV in (run_dir / "config.toml").read_text(), "the config names the variable, not the key"


@pytest.mark.slow
def test_first_step_run_on_ray_completes_through_injected_500s(katan, tmp_path, ray_local):
    url = katan("--error-rate", "0.6")
    raw = api_teacher_config(url, "local")
    raw["protocol"]["ks"] = [0, 1, 2]
    run_dir = runner.run(configlib.decode(raw), out=str(tmp_path))
    messages = log.read_all(run_dir / "messages.jsonl")
    assert sum(isinstance(m, Guidance) for m in messages) == 6
    usage = [m for m in messages if isinstance(m, Usage) and m.agent == "api"]
    assert usage and usage[0].engine == "openai" and usage[0].prompt_tokens > 0
    assert sum(u.errors for u in usage) > 0, "60% of requests got HTTP 500 and were retried"
    assert_secret_absent(run_dir)


@pytest.mark.slow
def test_teacher_on_a_real_model_behind_the_server(katan, tmp_path):
    folder = models.resolve("smollm2-135m-instruct").path
    url = katan(backend="transformers", model=folder)
    raw = api_teacher_config(url, "inline")
    raw["agents"]["api"]["model"] = folder
    run_dir = runner.run(configlib.decode(raw), out=str(tmp_path))
    messages = log.read_all(run_dir / "messages.jsonl")
    guidance = [m for m in messages if isinstance(m, Guidance)]
    assert len(guidance) == 3 and any(g.steps for g in guidance), "the served model wrote first steps"
    usage = [m for m in messages if isinstance(m, Usage) and m.agent == "api"]
    assert sum(u.completion_tokens for u in usage) > 0
    assert_secret_absent(run_dir)
    assert os.environ[KEY_ENV] == SECRET


@pytest.mark.slow
def test_teacher_writing_methods_through_the_server(katan):
    from schoolroom.agents.teacher import Teacher
    from schoolroom.config import AgentConfig
    from schoolroom.environment import synthetic
    from schoolroom.messages import Mistake, Note, Rationale

    folder = models.resolve("smollm2-135m-instruct").path
    url = katan(backend="transformers", model=folder)
    cfg = AgentConfig(role="teacher", engine="openai", model=folder, base_url=url, api_key_env=KEY_ENV,
                      max_tokens=96, concurrency=2)
    from conftest import Recording, check_parsed

    from schoolroom.agents.engines.openai import OpenAIEngine

    engine = Recording(OpenAIEngine(folder, base_url=url, api_key_env=KEY_ENV, concurrency=2))
    teacher = Teacher("api", cfg, engine=engine)
    problems = synthetic(2, steps=2, seed=8)
    mistake = Mistake(problem_id=problems[0].problem_id, attempt_id="a", text="Tom has 1 + 1 = 3.\n#### 3")
    tailored = teacher.tailor([mistake], problems, n=2)
    replies = list(engine.replies)
    plans = teacher.plan(problems)
    side = teacher.drain()
    notes = [m for m in side if isinstance(m, Note) and m.data["task"] == "tailored"]
    check_parsed(replies, tailored, notes)
    assert len(replies) == 2 and all(isinstance(r, Rationale) and r.mistake_id == mistake.id for r in tailored)
    assert len(plans) == 2
    usage = [m for m in side if m.__class__.__name__ == "Usage"]
    assert sum(u.completion_tokens for u in usage) > 0 and all(u.engine == "openai" for u in usage)
