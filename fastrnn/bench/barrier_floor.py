"""The floor of a persistent step: the measured cost of one empty grid-wide barrier.

The CUDA backend's kernels synchronise the whole grid once per time step, so no step can be
faster than one ``grid.sync()`` across the same number of blocks (one per SM, 256 threads each).
``fastrnn._C.empty_barriers`` launches a cooperative kernel that does nothing else; timing
``n`` and ``2n`` barriers and taking the difference removes the launch cost:

    us per barrier = (t(2n) - t(n)) / n        (medians over ``repeats`` CUDA-event samples)

The benchmark records the result in its JSON metadata and prints it beside the rows' us/step.
"""

from __future__ import annotations

import statistics
from typing import Optional

import torch

from .timing import Timer


def measure(device: torch.device, iters: int = 2000, repeats: int = 7) -> Optional[dict]:
    """``{"blocks", "iters", "us_per_barrier"}`` on ``device``, or None where it cannot run
    (not a CUDA device, or the extension is not built)."""
    if device.type != "cuda":
        return None
    try:
        from fastrnn import _C
    except ImportError:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    blocks = torch.cuda.get_device_properties(index).multi_processor_count
    timer = Timer(device)

    def median_ms(n: int) -> float:
        _C.empty_barriers(n, blocks, index)  # warm-up (module load, first cooperative launch)
        return statistics.median(timer(lambda: _C.empty_barriers(n, blocks, index)) for _ in range(repeats))

    per_barrier_ms = (median_ms(2 * iters) - median_ms(iters)) / iters
    return {"blocks": blocks, "threads_per_block": 256, "iters": iters, "us_per_barrier": per_barrier_ms * 1e3}
