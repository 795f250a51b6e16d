"""This machine's matmul rate, the denominator of every MFU the benchmarks print."""

from __future__ import annotations

import time


def gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a ``size``-cube matmul in ``dtype`` on this machine's torch threads. A dtype the CPU has no
    native path for (bf16 on AVX2: 0.3 GFLOP/s) is measured on one 512-cube product instead of minutes of 2048s."""
    import torch

    def seconds(a, b) -> float:
        t = time.perf_counter()
        a @ b
        return time.perf_counter() - t

    def pair(n: int):
        return torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)

    first = 2 * 512 ** 3 / seconds(*pair(512)) / 1e9
    if first < 10:
        return first
    a, b = pair(size)
    seconds(a, b)  # warm up
    return 2 * size ** 3 / min(seconds(a, b) for _ in range(repeats)) / 1e9
