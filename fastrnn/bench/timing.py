"""Timing primitives.

GPU: every sample is bracketed by two CUDA events on the current stream and read after a
synchronize, so it is GPU time from the first kernel of the call to the end of the last one,
including any gaps where the GPU waited for the host to launch work (the time a user waits).
CPU: ``time.perf_counter`` around the call.

Samples from different implementations are taken in interleaved rounds by the runner (A, B, C,
A, B, C, ...) so drift in clocks or in the load of a shared machine hits all of them alike;
warm-up calls (Triton compilation, cuDNN plan creation, allocator growth) are excluded, and the
inputs are rotated through several buffers (see :func:`rotation_count`).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional

import torch


class Timer:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> float:
        """Run ``fn`` once and return its duration in milliseconds."""
        if self.cuda:
            self.sync()
            self._start.record()
            fn()
            self._end.record()
            self._end.synchronize()
            return float(self._start.elapsed_time(self._end))
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    @property
    def method(self) -> str:
        if self.cuda:
            return "CUDA events around each call, interleaved rounds, warm-up excluded, inputs rotated"
        return "time.perf_counter around each call, interleaved rounds, warm-up excluded, inputs rotated"


def quantile(sorted_values: List[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (q in [0, 1])."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: List[float]) -> Dict[str, Optional[float]]:
    s = sorted(samples_ms)
    return {
        "median_ms": quantile(s, 0.5),
        "p20_ms": quantile(s, 0.2),
        "p80_ms": quantile(s, 0.8),
        "min_ms": s[0] if s else None,
        "samples": len(s),
    }


def rotation_count(device: torch.device, bytes_per_input: int, l2_bytes: Optional[int]) -> int:
    """How many input buffers to cycle through so one buffer is not cache-resident when reused.

    GPU: enough buffers that the inputs together exceed twice the L2 cache (at least 2, at most
    8). CPU: 2 (the weights and activations dwarf the inputs there; rotating more only costs
    memory).
    """
    if device.type != "cuda":
        return 2
    l2 = l2_bytes or 50 * 2**20
    return int(min(8, max(2, math.ceil(2 * l2 / max(1, bytes_per_input)))))
