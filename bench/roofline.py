"""This machine's matmul rate, the denominator of every MFU the benchmarks print."""

from __future__ import annotations

import time


def gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a ``size``-cube matmul in ``dtype`` on this machine's torch threads. A dtype the CPU has no
    native path for (bf16 on AVX2: 0.3 GFLOP/s) is measured on one 512-cube product instead of minutes of 2048s."""
    import torch

    def rate(n: int) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        t = time.perf_counter()
        a @ b
        return 2 * n ** 3 / (time.perf_counter() - t) / 1e9

    first = rate(512)
    if first < 10:
        return first
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9
