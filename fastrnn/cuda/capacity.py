"""How large a hidden size the CUDA backend takes: the one place, used by ``backend.unsupported``.

The persistent kernels (kernels/forward.cuh, kernels/backward.cuh) split the hidden units over
P = min(H, SMs) blocks, one block per SM, all resident at once (cooperative launch). Block p owns
U = ceil(H / P) units with all G of their gates (G = 1 Elman, 3 GRU, 4 LSTM) and keeps their
W_hh slice in shared memory for all T steps, plus a tile of BT batch rows staged per pass:

    forward:   G*U*H*itemsize (W_hh rows, 16-byte aligned)  +  BT * H * 4        (h_{t-1}, fp32)
    backward:  G*U*H*itemsize (W_hh columns, transposed)     +  BT * G*H * 4      (dgates, fp32)

BT is the largest of 8, 7, ..., 1 (and at most B) that fits; the problem fits when BT = 1 fits,
in both directions. This restates ``fastrnn::make_plan`` (kernels/layout.cuh), which the host
launcher uses; tests/test_cuda_backend.py checks the two agree through ``fastrnn._C.plan``.

H100 SXM: 132 SMs, 227 KB = 232,448 bytes of shared memory per block (opt-in maximum). Examples
(backward, the binding side: its row is G*H*4 bytes instead of H*4):

    LSTM bf16 H=1024: P=128, U=8:   4*8*1024*2  =  65,536 + 1*4*1024*4 = 16,384 ->  81,920 B  fits
                      (the forward takes BT=8: 65,536 + 8*1024*4 = 98,304 B)
    LSTM bf16 H=1816: P=130, U=14:  4*14*1816*2 = 203,392 + 4*1816*4 = 29,056 -> 232,448 B  fits exactly
    LSTM bf16 H=1817: P=130, U=14:  4*14*1817*2 = 203,504 + 4*1817*4 = 29,072 -> 232,576 B  too big

Capacities on an H100 (``capacity(G, itemsize)`` with the defaults below; 16-bit = bf16, fp16):

    Elman fp32 2641, 16-bit 3748    GRU fp32 1490, 16-bit 2112    LSTM fp32 1320, 16-bit 1816

Registers are not the limit (256 threads per block, one block per SM). Other GPUs: the backend
passes the device's own SM count and opt-in shared memory.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

H100_SMS = 132
H100_SMEM_PER_BLOCK = 232_448  # 227 KB, cudaDevAttrMaxSharedMemoryPerBlockOptin

MAX_BATCH_TILE = 8  # kMaxBatchTile in kernels/layout.cuh


class Plan(NamedTuple):
    blocks: int  # 0: does not fit
    units: int
    batch_tile: int
    smem: int


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def smem_bytes(gates: int, itemsize: int, hidden: int, units: int, batch_tile: int, backward: bool) -> int:
    weights = _align16(gates * units * hidden * itemsize)
    row = (gates * hidden if backward else hidden) * 4
    return weights + batch_tile * row


def plan(gates: int, itemsize: int, hidden: int, batch: int, num_sms: int, smem_per_block: int, backward: bool) -> Plan:
    """Python twin of ``fastrnn::make_plan`` in kernels/layout.cuh."""
    if hidden <= 0 or num_sms <= 0:
        return Plan(0, 0, 0, 0)
    blocks = min(hidden, num_sms)
    units = -(-hidden // blocks)
    used = -(-hidden // units)
    for tile in range(min(max(batch, 1), MAX_BATCH_TILE), 0, -1):
        nbytes = smem_bytes(gates, itemsize, hidden, units, tile, backward)
        if nbytes <= smem_per_block:
            return Plan(used, units, tile, nbytes)
    return Plan(0, 0, 0, 0)


def fits(gates: int, itemsize: int, hidden: int, num_sms: int = H100_SMS, smem_per_block: int = H100_SMEM_PER_BLOCK) -> bool:
    """Whether forward and backward kernels fit for ``hidden`` (at batch tile 1)."""
    return all(plan(gates, itemsize, hidden, 1, num_sms, smem_per_block, bwd).blocks > 0 for bwd in (False, True))


@functools.lru_cache(maxsize=None)
def capacity(gates: int, itemsize: int, num_sms: int = H100_SMS, smem_per_block: int = H100_SMEM_PER_BLOCK) -> int:
    """Largest hidden size the CUDA backend takes (shared memory grows monotonically with H)."""
    lo, hi = 0, 1
    while fits(gates, itemsize, hi, num_sms, smem_per_block):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        if fits(gates, itemsize, mid, num_sms, smem_per_block):
            lo = mid
        else:
            hi = mid
    return lo
