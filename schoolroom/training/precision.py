"""Which precision training runs in: bf16 where the hardware computes it natively, float32 otherwise.

An agent's ``dtype`` setting reaches every training kind (``Trainer.fit_args``) and is resolved here:

- ``"auto"`` (the default): bf16 where the device has it natively (a GPU that supports it; a CPU with
  ``avx512_bf16`` or ``amx_bf16``), float32 elsewhere;
- ``"bfloat16"`` / ``"float16"``: that, except on a CPU without native bf16, where it falls back to float32 (a bf16
  matmul there ran at 0.3 GFLOP/s against 154 in float32: 500x slower, never what a run wants);
- ``"float32"``: float32.

How it runs: on a GPU the weights are loaded in that dtype (peft keeps the LoRA weights in float32, and autocast
runs their matmuls in the low precision too); on a CPU the weights stay float32 and the forward passes run under
``torch.autocast("cpu", bfloat16)``: bf16 matmuls with float32 weights, optimizer state and accumulation.
The resolved precision and why is part of every training's metrics (``bf16`` 1/0) and said in a Note.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16", "float16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): measured on a CPU without it (AVX2 only),
    a bf16 matmul ran at 0.3-0.9 GFLOP/s against 154-160 in fp32, and a 3-step SFT took 162 s against 9 s."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return True  # not Linux: TRL's default
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def native_bf16(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``cuda:1``) computes bf16 natively."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_has_bf16()


@dataclass(frozen=True)
class Precision:
    """What a training computes in (``compute``), what its weights are loaded in (``weights``), and why."""

    compute: str  # float32 | bfloat16 | float16
    weights: str
    why: str
    device: str = "cpu"

    @property
    def low(self) -> bool:
        return self.compute != "float32"

    def autocast(self):
        """The context a forward pass runs in: autocast to ``compute`` when it is not float32."""
        if not self.low:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device.split(":")[0], dtype=getattr(torch, self.compute))

    def metrics(self) -> dict[str, float]:
        return {"bf16": float(self.compute == "bfloat16")}


def resolve(dtype: str = "auto", device: str = "cpu") -> Precision:
    """The precision ``dtype`` (an agent's setting) means on ``device``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    gpu = device.startswith("cuda")
    native = native_bf16(device)
    if dtype == "float32":
        return Precision("float32", "float32", "dtype float32", device)
    if dtype == "auto":
        if not native:
            return Precision("float32", "float32", f"dtype auto: {device} has no native bf16", device)
        dtype, why = "bfloat16", f"dtype auto: {device} has native bf16"
    else:
        why = f"dtype {dtype}"
    if not gpu and not native:
        return Precision("float32", "float32", f"{why} asked, but this CPU has no native bf16 (avx512_bf16, amx_bf16): "
                         "float32 (bf16 would be ~500x slower)", device)
    return Precision(dtype, dtype if gpu else "float32", why + ("" if gpu else ": float32 weights, bf16 autocast"),
                     device)
