"""Where agents run: in this process (``inline``) or as Ray actors with the resources they ask for
(``actors.py``: replicas, restarts, placement groups, adapters sent between nodes, and ``spawn``).

The same ``Worker`` wraps an agent in both cases; protocol code sees no difference.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from typing import Any

import msgspec

from schoolroom import plugins as pluginlib
from schoolroom.agents import explorer, student, teacher, trainer, verifier  # noqa: F401  (declare the roles)
from schoolroom.agents.base import ROLES
from schoolroom.config import AgentConfig, RuntimeConfig
from schoolroom.messages import TrainResult
from schoolroom.nested import each

# environment variables an actor needs to see what the driver sees (data, cache, offline mode)
FORWARDED_PREFIXES = ("SCHOOLROOM_", "HF_", "TRANSFORMERS_", "VLLM_", "TOKENIZERS_", "TQDM_", "PYTHONWARNINGS")


def is_effect(role: str, method: str) -> bool:
    return bool(getattr(getattr(ROLES[role], method, None), "_schoolroom_effect", False))


class Worker:
    """Holds one agent and runs its methods; returns each result with the side messages it recorded."""

    def __init__(self, name: str, config: AgentConfig, secrets: dict[str, str] | None = None, workdir: str = ".",
                 plugins: tuple = ()):
        os.environ.update(secrets or {})  # an API key travels as an argument, never in a runtime_env Ray may log
        self._life = os.urandom(8).hex()  # new when Ray restarts the actor
        if config.threads:  # else Ray's default: OMP_NUM_THREADS = the actor's num_cpus
            import torch

            torch.set_num_threads(config.threads)
        pluginlib.load_all(plugins)  # the protocol's own file: its roles, messages, kinds and engines
        if config.role not in ROLES:
            raise ValueError(f"agent {name}: {ROLES.unknown(config.role)}")
        self.agent = ROLES[config.role](name, config, workdir=workdir)

    def call(self, method: str, args: tuple, kwargs: dict, adapters: dict | None = None) -> tuple[Any, list]:
        """``adapters``: {trainer's path: [its folder's bytes in Ray's object store, trainer's node]} for adapters
        made on another node; the agent is given a copy in its own working folder instead of the path."""
        if adapters:
            args, kwargs = self._local(args, adapters), self._local(kwargs, adapters)
        result = getattr(self.agent, method)(*args, **kwargs)
        return result, self.agent.drain()

    def life(self) -> str:
        return self._life

    def pack(self, path: str) -> bytes:
        """The folder ``path`` (an adapter this agent wrote) as tar bytes, for an agent on another node."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(path, arcname=".")
        return buf.getvalue()

    def _local(self, x: Any, adapters: dict) -> Any:
        """``x`` with every TrainResult whose adapter was made on another node pointing at a copy of it here."""
        return each(x, lambda v: self._copy(v, *adapters[v.path])
                    if isinstance(v, TrainResult) and v.path in adapters else v)

    def _copy(self, x: TrainResult, ref: Any, node: str) -> TrainResult:
        """``x`` pointing at a copy of its adapter in this agent's working folder, unpacked from ``ref``'s bytes."""
        copy = os.path.join(self.agent.workdir, "adapters-copied", node[:12], os.path.basename(x.path))
        if not os.path.exists(os.path.join(copy, ".complete")):
            import ray

            data = ray.get(ref)
            shutil.rmtree(copy, ignore_errors=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(copy, filter="data")
            open(os.path.join(copy, ".complete"), "w").close()
            self.agent.note("adapter_copied", f"adapter {x.adapter} copied from node {node[:12]} "
                            f"({len(data) / 2**20:.1f} MiB through Ray's object store) to {copy}",
                            adapter=x.adapter, node=node, bytes=len(data), path=copy)
        return msgspec.structs.replace(x, path=copy)

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "inline"

    def placement_group(self) -> str | None:
        """The id of the placement group this actor runs in (None: none)."""
        from ray.util import get_current_placement_group

        pg = get_current_placement_group()
        return pg.id.hex() if pg else None

    def pid(self) -> int:
        return os.getpid()


class Inline:
    """Runs the agent in this process: set breakpoints in agent code and step through with pdb."""

    def __init__(self, name: str, config: AgentConfig, workdir: str = ".", plugins: tuple[str, ...] = ()):
        self.name = name
        self.worker = Worker(name, config, workdir=workdir, plugins=plugins)

    def submit(self, method: str, *args, **kwargs):
        return lambda: self.worker.call(method, args, kwargs)  # runs when its result is asked for

    def result(self, fut, timeout: float | None = None):
        return fut()

    def node_id(self) -> str:
        return "inline"

    def nodes(self) -> list[str]:
        return ["inline"]

    def kill(self) -> None:
        self.worker.agent.close()


class AgentTimeout(TimeoutError):
    pass


def first_done(sent: list, timeout: float | None) -> int | None:
    """The index of a call in ``sent`` that has its answer (None: none within ``timeout``); inline calls run
    when asked, so the first."""
    refs = [getattr(s, "ref", None) for s in sent]
    if not refs or any(r is None for r in refs):
        return 0 if refs else None
    import ray

    done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    return refs.index(done[0]) if done else None


def start_ray(rt: RuntimeConfig) -> None:
    """Connect to Ray as ``rt.address`` says; a light local Ray (no dashboard, small object store) for ``local``."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # what a dead actor started dies with it (a vLLM engine process holding GPU memory), so its restart finds the GPU
    # free: Ray kills the actor's process group (Ray 2.60's default, asked for here). Not Ray's subreaper setting: it
    # makes this driver reap every child it starts, so their exit codes read 0. Read when the raylet starts: on a
    # cluster `ray start` needs it in its environment (README)
    os.environ.setdefault("RAY_process_group_cleanup_enabled", "1")
    # the CLI without --debug: the actors' output stays in Ray's session logs, out of the user's terminal
    chatty = os.environ.get("SCHOOLROOM_QUIET") != "1"
    level = "warning" if chatty else "error"
    if rt.address == "local":
        ray.init(num_cpus=rt.num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=rt.object_store_mb * 10**6, logging_level=level, log_to_driver=chatty)
    else:
        ray.init(address=rt.address, logging_level=level, log_to_driver=chatty)
