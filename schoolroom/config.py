"""Experiment configs: a TOML file decoded into typed Structs.

A typo or a wrong type fails before anything starts, and the error names the file and the
key path (``experiments/x.toml: Expected `int`, got `str` - at `$.agents.student.max_tokens```).
``--set a.b=c`` overrides go through the same decoding. Protocol-specific settings live in
``[protocol]`` and are decoded by the protocol's own Struct (see ``decode_section``).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec


class ConfigError(ValueError):
    pass


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


# what an agent or runtime setting does to the answers of a run's calls, declared on each field
KEY = msgspec.Meta(extra={"call_key": True, "resumable": False})  # changes what the agent answers: in call keys
PLUMBING = msgspec.Meta(extra={"call_key": False, "resumable": True})  # where it runs, how fast: a resume may change it
CUTS = msgspec.Meta(extra={"call_key": False, "resumable": False})  # cuts calls into pieces (each piece a key)


def declared(cls: type, what: str) -> tuple[str, ...]:
    """The fields of ``cls`` whose declaration says ``what`` (``call_key`` or ``resumable``), in field order.
    Raises TypeError naming a field that declares nothing."""
    out = []
    for f in msgspec.structs.fields(cls):
        metas = [m for m in getattr(f.type, "__metadata__", ()) if isinstance(m, msgspec.Meta) and m.extra
                 and "call_key" in m.extra]
        if not metas:
            raise TypeError(f"{cls.__name__}.{f.name} does not declare what it does to call keys: annotate it "
                            "Annotated[type, KEY | PLUMBING | CUTS] (schoolroom/config.py)")
        if metas[0].extra[what]:
            out.append(f.name)
    return tuple(out)


class Resources(_Strict):
    """What the agent's Ray actor asks for; ``custom`` names custom resources (``{"teacher_node": 1}``)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom: dict[str, float] = {}
    memory_mb: int | None = None
    # agents naming the same group share one Ray placement group packed on one node (a trainer and a vLLM student
    # sharing a GPU: num_gpus = 0.5 each), as OpenRLHF and verl colocate them
    group: str | None = None


class AgentConfig(_Strict):
    """One agent: its role, its generation engine and model, sampling settings and resources. Each setting
    declares what it does to the agent's answers: ``KEY`` (part of every call key: a changed one is asked again),
    ``PLUMBING`` (where it runs and how fast: not in keys, a resume may change it) or ``CUTS`` (not in keys, but
    it cuts calls into pieces, each piece its own key: fixed for a run)."""

    # teacher | student | verifier | explorer | trainer | a role a protocol's file declares
    role: Annotated[str, KEY]
    engine: Annotated[str, KEY] = "hf"  # hf | openai | reference | vllm | an engine a protocol's file declares
    model: Annotated[str, KEY] = "smollm2-135m-instruct"
    # hf / vllm
    device: Annotated[str, KEY] = "cpu"
    # auto: training in bf16 where the device has it natively (schoolroom.training.precision), else float32; the
    # hf engine in float32 (bf16 greedy text depends on the batch); vllm in bf16
    dtype: Annotated[Literal["auto", "float32", "bfloat16", "float16"], KEY] = "auto"
    batch_size: Annotated[int, PLUMBING] = 16
    # torch threads; default: Ray's (= num_cpus). Agents that take turns may share cores
    threads: Annotated[int | None, PLUMBING] = None
    max_model_len: Annotated[int, KEY] = 2048
    gpu_memory_utilization: Annotated[float, PLUMBING] = 0.85
    tensor_parallel_size: Annotated[int, KEY] = 1
    # vllm: how its tensor-parallel workers start ("mp": processes; "ray": Ray actors; None: vLLM's choice). Inside a
    # placement group only "mp" works with tensor_parallel_size > 1
    distributed_executor_backend: Annotated[Literal["mp", "ray"] | None, PLUMBING] = None
    enable_lora: Annotated[bool, KEY] = True
    max_lora_rank: Annotated[int, KEY] = 16
    # openai
    base_url: Annotated[str | None, PLUMBING] = None
    api_key_env: Annotated[str, PLUMBING] = "OPENAI_API_KEY"
    timeout_s: Annotated[float, PLUMBING] = 60.0
    max_retries: Annotated[int, PLUMBING] = 6
    # exponential backoff with jitter: waits up to backoff_s * 2**attempt, capped
    backoff_s: Annotated[float, PLUMBING] = 0.5
    max_backoff_s: Annotated[float, PLUMBING] = 20.0
    concurrency: Annotated[int, PLUMBING] = 4
    extra_body: Annotated[dict[str, Any], KEY] = {}
    # generation
    max_tokens: Annotated[int, KEY] = 256
    temperature: Annotated[float, KEY] = 0.0
    top_p: Annotated[float, KEY] = 1.0
    stop: Annotated[list[str], KEY] = []
    seed: Annotated[int, KEY] = 0
    system_prompt: Annotated[str | None, KEY] = None
    resources: Annotated[Resources, PLUMBING] = Resources()
    # Ray actors of this agent, each with `resources`; a batched call is split across them
    replicas: Annotated[int, CUTS] = 1
    options: Annotated[dict[str, Any], KEY] = {}


class DataConfig(_Strict):
    """A problem set: ``source = "synthetic"`` (``n`` problems of ``steps`` steps) or a dataset name."""

    source: str = "synthetic"
    split: str = "test"
    n: int = 30
    steps: list[int] = msgspec.field(default_factory=lambda: [1, 2, 3])
    seed: int = 0
    offset: int = 0
    limit: int | None = None
    data_dir: str | None = None
    exclude: list[str] = []  # other problem sets of the config whose questions are left out (e.g. the held-out set)


class RuntimeConfig(_Strict):
    """``address``: ``local`` (start a light local Ray), ``inline`` (no Ray: debug with pdb), ``auto`` or a
    cluster address (``ray://head:10001``, ``head:6379``)."""

    address: Annotated[str, PLUMBING] = "local"
    num_cpus: Annotated[int | None, PLUMBING] = None
    object_store_mb: Annotated[int, PLUMBING] = 200
    call_timeout_s: Annotated[float, PLUMBING] = 3600.0
    # a batched call is cut into pieces of this many items (spread over an agent's replicas)
    chunk_size: Annotated[int, CUTS] = 32
    # an actor that dies mid-call (killed, out of memory) is restarted and asked again, so often
    max_restarts: Annotated[int, PLUMBING] = 3
    # calls a protocol starts together run at the same time (false: one after another)
    concurrent: Annotated[bool, PLUMBING] = True
    # every node reads every node's paths (NFS): adapters go as paths, not as bytes
    shared_fs: Annotated[bool, PLUMBING] = False


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    out: str = "runs"
    reuse: dict[str, str] = {}  # agent -> an earlier run's messages.jsonl to answer its matching calls from
    tensorboard: bool = False  # scalars per round (accuracy, losses, tokens, seconds) to <run>/tensorboard
    wandb_project: str | None = None  # ... and to this Weights & Biases project, when wandb is installed


class Config(_Strict):
    run: RunConfig = RunConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    data: dict[str, DataConfig] = {}
    agents: dict[str, AgentConfig] = {}
    protocol: dict[str, Any] = {}


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, making tables as needed."""
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a table")
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``3``, ``[0, 1]``, ``"x"``); a bare word is a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes key=value, not {item!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.strip(), value


def decode(raw: dict[str, Any], source: str = "<config>") -> Config:
    raw = dict(raw)
    tables: dict[str, dict] = {}
    for key, cls in (("agents", AgentConfig), ("data", DataConfig)):
        section = raw.pop(key, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: Expected a table - at `$.{key}`")
        # one entry at a time, so an error names the entry (`$.agents.student.max_tokens`)
        tables[key] = {name: decode_section(v, cls, f"{key}.{name}", source) for name, v in section.items()}
    try:
        cfg = msgspec.structs.replace(msgspec.convert(raw, Config), **tables)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {e}") from None
    prompts = {a.system_prompt for a in cfg.agents.values() if a.role in ("student", "trainer")}
    if len(prompts) > 1:
        raise ConfigError(f"{source}: the trainer trains on the prompt the student sees: give the trainer the "
                          "student's system_prompt - at `$.agents`")
    return cfg


def load(path: str | Path, overrides: list[str] = ()) -> tuple[Config, dict[str, Any]]:
    """(typed config, raw dict with overrides applied) for a TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config file {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    raw = copy.deepcopy(raw)
    for item in overrides:
        set_key(raw, *parse_override(item))
    try:
        return decode(raw, str(path)), raw
    except ConfigError:
        if not overrides:
            raise
        blame = _blame(tomllib.loads(path.read_text(encoding="utf-8")), overrides)
        if blame is None:
            raise
        raise blame from None


def _blame(raw: dict[str, Any], overrides: list[str]) -> ConfigError | None:
    """The error of the first ``--set`` that makes a config that decodes fail (named after the ``--set``, not
    the file); None when the file fails by itself."""
    try:
        decode(raw)
    except ConfigError:
        return None
    for item in overrides:
        set_key(raw, *parse_override(item))
        try:
            decode(raw, f"--set {item}")
        except ConfigError as e:
            return e
    return None


def with_limit(cfg: Config, limit: int | None) -> Config:
    """``cfg`` with every problem set capped at ``limit`` problems (``--limit``), written into the sets so the
    resolved config repeats the run."""
    if limit is None:
        return cfg
    data = {name: msgspec.structs.replace(d, n=min(d.n, limit), limit=min(d.limit or limit, limit))
            for name, d in cfg.data.items()}
    return msgspec.structs.replace(cfg, data=data)


def decode_section(raw: dict[str, Any], cls: type, where: str, source: str = "<config>"):
    """Decode a sub-table (e.g. ``[protocol]``) into ``cls``, errors pointing at ``$.where...``."""
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as e:
        msg = str(e).replace("`$", f"`$.{where}")
        if "`$" not in str(e):
            msg += f" - at `$.{where}`"
        raise ConfigError(f"{source}: {msg}") from None


def dump(raw: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(raw)
