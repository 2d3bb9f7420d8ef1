"""Wall-clock timing shared by the bench modules (CUDA work is synchronised before and after each call)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def seconds(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of ``fn()``; on ``cuda`` devices the queued kernels are waited for."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def timings(fn: Callable[[], object], device: str, repeats: int, warmup: bool = True) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn()``, after one untimed call when ``warmup``."""
    if warmup:
        fn()
    return [seconds(fn, device) for _ in range(repeats)]
