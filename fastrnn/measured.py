"""Where a fastrnn kernel backend may run under ``backend="auto"``: verified and measured faster.

``auto`` must never be slower than torch.nn. A kernel backend ("triton", "cuda") is admitted to
``auto`` for a problem only when both hold on that GPU:

1. its equivalence tests passed there at the current commit (``bench/gpu_check.sh``), and
2. ``fastrnn-bench`` measured it faster than torch's own path (cuDNN) for that configuration,
   side by side in one run.

:data:`FASTER_THAN_TORCH` records such regions, one entry per (backend, GPU name); the GPU check's
results under ``bench/results/`` are what fill it in, by hand, in a commit that cites the results
file. It is empty: no fastrnn kernel has run on a GPU yet, so on a GPU ``auto`` runs torch's
kernels (or the reference where torch cannot).

The CPU backend ("cpu") has its own table, :data:`CPU_FASTER_THAN_TORCH`, keyed by what carries a
CPU measurement from one machine to another: instruction set, cell, batch and hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from .backends import LayerProblem


@dataclass(frozen=True)
class Region:
    """Configurations measured faster than torch: a cell, a dtype, and ranges of H, B and T."""

    cell: str  # fastrnn cell name, e.g. "lstm"
    dtype: torch.dtype
    hidden: Tuple[int, int]  # inclusive range of hidden_size
    batch: Tuple[int, int]  # inclusive range of batch_size
    min_seq_len: int  # at and above this T (a persistent kernel's launch cost is amortised)
    results: str  # the bench/results/ file that measured it

    def contains(self, problem: LayerProblem) -> bool:
        return (
            problem.cell.name == self.cell
            and problem.dtype == self.dtype
            and self.hidden[0] <= problem.hidden_size <= self.hidden[1]
            and self.batch[0] <= problem.batch_size <= self.batch[1]
            and problem.seq_len >= self.min_seq_len
        )


# (backend name, torch.cuda.get_device_name()) -> regions. Empty until a GPU run fills it in.
FASTER_THAN_TORCH: Dict[Tuple[str, str], Tuple[Region, ...]] = {}


def _device_name(device: torch.device) -> Optional[str]:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(device)


_NOT_MEASURED = (
    "not verified and measured faster than torch's kernels for this configuration on this device "
    "(fastrnn.measured.FASTER_THAN_TORCH); only run when named"
)


def why_not_auto(backend: str, problem: LayerProblem) -> Optional[str]:
    """None when ``backend`` is verified and measured faster than torch for ``problem``."""
    if not FASTER_THAN_TORCH or problem.device.type != "cuda":  # every forward asks: be quick
        return _NOT_MEASURED
    regions = FASTER_THAN_TORCH.get((backend, _device_name(problem.device)), ())
    return None if any(region.contains(problem) for region in regions) else _NOT_MEASURED


def auto_rule(backend: str) -> Callable[[LayerProblem], Optional[str]]:
    """The ``Backend.auto`` function of kernel backend ``backend``."""
    return lambda problem: why_not_auto(backend, problem)


# ---------------------------------------------------------------------------- the CPU backend


@dataclass(frozen=True)
class CpuRegion:
    """Configurations where backend "cpu" was measured faster than torch's CPU kernels."""

    cell: str
    batch: Tuple[int, int]  # inclusive range of batch_size
    hidden: Tuple[int, int]  # inclusive range of hidden_size
    min_seq_len: int  # at and above this T (shorter calls, a cell's single step above all, pay
    #                   the call's fixed cost over fewer steps: not measured)
    results: str  # what measured it (the README's command and table)

    def contains(self, problem: LayerProblem) -> bool:
        return (problem.cell.name == self.cell and self.batch[0] <= problem.batch_size <= self.batch[1]
                and self.hidden[0] <= problem.hidden_size <= self.hidden[1]
                and problem.seq_len >= self.min_seq_len)


# instruction set (fastrnn.cpu.isa) -> regions. Keyed by what carries a measurement from one
# machine to another: the instruction set, the cell, the batch and hidden sizes.
# Measured with `fastrnn-bench --preset cpu --device cpu --threads 1` (README, Speed: T=128, I=H,
# float32, B in {1, 16}, H in {256, 512}, T=128, alternating with torch.nn in one run) on a 2-core
# AVX-512 Xeon, torch 2.14.1: every corner of each region was faster than torch.nn in inference
# (1.19-2.72x) and in training (1.54-8.54x), in every run; a region spans the ranges between its
# measured corners. Not admitted: LSTM (0.96-1.19x of torch's oneDNN LSTM except at B=1 H=256),
# and every configuration not measured (other sizes, rnn_relu, the AVX2 and portable paths).
_MEASURED_CPU = "bench/results/20261208T001652_cpu_1756b0868fce.json"
CPU_FASTER_THAN_TORCH: Dict[str, Tuple[CpuRegion, ...]] = {
    "avx512": (
        CpuRegion("gru", (1, 16), (256, 512), 128, _MEASURED_CPU),
        CpuRegion("rnn_tanh", (1, 16), (256, 512), 128, _MEASURED_CPU),
    ),
}

_CPU_NOT_MEASURED = (
    "not measured faster than torch's CPU kernels for this instruction set, cell, batch and hidden "
    "size (fastrnn.measured.CPU_FASTER_THAN_TORCH); only run when named"
)


def why_not_auto_cpu(isa: str, problem: LayerProblem) -> Optional[str]:
    """None when backend "cpu" is measured faster than torch for ``problem`` on ``isa``."""
    regions = CPU_FASTER_THAN_TORCH.get(isa, ())
    return None if any(region.contains(problem) for region in regions) else _CPU_NOT_MEASURED

