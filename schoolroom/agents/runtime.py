"""Where agents run: in this process (``inline``) or as Ray actors with the resources they ask for.

The same ``Host`` wraps an agent in both cases; protocol code sees no difference.
"""

from __future__ import annotations

import os
from typing import Any

from schoolroom import plugins as pluginlib
from schoolroom.agents import explorer, student, teacher, trainer, verifier  # noqa: F401  (declare the roles)
from schoolroom.agents.base import ROLES
from schoolroom.config import AgentConfig, RuntimeConfig

# environment variables an actor needs to see what the driver sees (data, cache, offline mode)
FORWARDED_PREFIXES = ("SCHOOLROOM_", "HF_", "TRANSFORMERS_", "VLLM_", "TOKENIZERS_", "TQDM_", "PYTHONWARNINGS")


def is_effect(role: str, method: str) -> bool:
    return bool(getattr(getattr(ROLES[role], method, None), "_schoolroom_effect", False))


class Host:
    """Holds one agent and runs its methods; returns each result with the side messages it recorded."""

    def __init__(self, name: str, config: AgentConfig, secrets: dict[str, str] | None = None, workdir: str = ".",
                 plugins: tuple = ()):
        os.environ.update(secrets or {})  # an API key travels as an argument, never in a runtime_env Ray may log
        if config.threads:  # else Ray's default: OMP_NUM_THREADS = the actor's num_cpus
            import torch

            torch.set_num_threads(config.threads)
        pluginlib.load_all(plugins)  # the protocol's own file: its roles, messages, kinds and engines
        if config.role not in ROLES:
            raise ValueError(f"agent {name}: unknown role {config.role!r}; known: {', '.join(ROLES)}")
        self.agent = ROLES[config.role](name, config, workdir=workdir)

    def call(self, method: str, args: tuple, kwargs: dict) -> tuple[Any, list]:
        result = getattr(self.agent, method)(*args, **kwargs)
        return result, self.agent.drain()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "inline"

    def pid(self) -> int:
        return os.getpid()


class InlineHost:
    """Runs the agent in this process: set breakpoints in agent code and step through with pdb."""

    def __init__(self, name: str, config: AgentConfig, workdir: str = ".", plugins: tuple[str, ...] = ()):
        self.name = name
        self.host = Host(name, config, workdir=workdir, plugins=plugins)

    def submit(self, method: str, *args, **kwargs):
        return lambda: self.host.call(method, args, kwargs)  # runs when its result is asked for

    def result(self, fut, timeout: float | None = None):
        return fut()

    def node_id(self) -> str:
        return "inline"

    def kill(self) -> None:
        self.host.agent.close()


class AgentTimeout(TimeoutError):
    pass


class RayHost:
    """The agent as a Ray actor holding the CPUs, GPUs and custom resources its config asks for."""

    def __init__(self, name: str, config: AgentConfig, workdir: str = ".", plugins: tuple = ()):
        import ray

        r = config.resources
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) and "KEY" not in k}
        secrets = {config.api_key_env: os.environ[config.api_key_env]} if config.api_key_env in os.environ else {}
        opts: dict[str, Any] = dict(num_cpus=r.num_cpus, num_gpus=r.num_gpus, resources=dict(r.custom) or None,
                                    name=None, max_concurrency=1, runtime_env={"env_vars": env} if env else None)
        if r.memory_mb:
            opts["memory"] = r.memory_mb * 2**20
        self.name = name
        self.actor = ray.remote(Host).options(**opts).remote(name, config, secrets, workdir, plugins)

    def submit(self, method: str, *args, **kwargs):
        return self.actor.call.remote(method, args, kwargs)

    def result(self, fut, timeout: float | None = None):
        import ray
        from ray.exceptions import GetTimeoutError, RayTaskError

        try:
            return ray.get(fut, timeout=timeout)
        except GetTimeoutError:
            raise AgentTimeout(f"agent {self.name} did not answer within {timeout:.0f}s "
                               "(runtime.call_timeout_s; is the cluster short of the resources it asks for?)") from None
        except RayTaskError as e:
            raise e.as_instanceof_cause() from None

    def node_id(self) -> str:
        import ray

        return ray.get(self.actor.node_id.remote(), timeout=120)

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


def start_ray(rt: RuntimeConfig) -> None:
    """Connect to Ray as ``rt.address`` says; a light local Ray (no dashboard, small object store) for ``local``."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # the CLI without --debug: the actors' output stays in Ray's session logs, out of the user's terminal
    chatty = os.environ.get("SCHOOLROOM_QUIET") != "1"
    level = "warning" if chatty else "error"
    if rt.address == "local":
        ray.init(num_cpus=rt.num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=rt.object_store_mb * 10**6, logging_level=level, log_to_driver=chatty)
    else:
        ray.init(address=rt.address, logging_level=level, log_to_driver=chatty)


def spawn(name: str, config: AgentConfig, rt: RuntimeConfig, workdir: str = ".",
          plugins: tuple[str, ...] = ()) -> InlineHost | RayHost:
    """Start agent ``name`` where the runtime says; ``workdir`` (the run directory) is where it may write files;
    ``plugins`` (a protocol's own file or module) are imported where it runs before it is made."""
    workdir = os.path.abspath(workdir)
    if rt.address == "inline":
        return InlineHost(name, config, workdir, plugins)
    start_ray(rt)
    return RayHost(name, config, workdir, pluginlib.bundle(plugins))  # the file's text: nodes need not share disks
