"""How large a hidden size the CUDA backend takes: the one place, used by ``backend.unsupported``.

The persistent kernels (kernels/forward.cuh, kernels/backward.cuh) split the hidden units over
P blocks, one block per SM, all resident at once (cooperative launch): P = min(H, 64) forward and
min(H, 48) backward (``PREFERRED_BLOCKS``) where that keeps the batch in as few passes over it as
P = min(H, SMs) does, else P = min(H, SMs); the largest hidden size is that of P = min(H, SMs).
Block p owns
U = ceil(H / P) units with all G of their gates (G = 1 Elman, 3 GRU, 4 LSTM) and keeps their
W_hh slice in shared memory for all T steps. Each step it computes C (M x BT) = A (M x K) . B^T
(kernels/block_product.cuh) with

    forward:   A = W_hh rows of its units     M = G*U,  K = H      B = h_{t-1} of BT sequences
    backward:  A = W_hh columns, transposed   M = U,    K = G*H    B = dgates of BT sequences

Shared memory per block (kernels/layout.cuh), rows padded to ld = align16(K) + 8 elements:

    A: M * ld * itemsize   +   B: BT * ld * itemsize   +   partials: 8 warps * ceil(M/16)*16 * align8(BT) * 4

(A and B each rounded up to 16 bytes). The passes over the batch are the fewest that fit (the
largest BT of 64, 63, ..., 1, at most B, that fits), and BT is then balanced over them:
BT = ceil(B / passes) (B=100 with room for 64 rows: two passes of 50, not 64 + 36). The problem
fits when BT = 1 fits, in both directions. This restates ``fastrnn::make_plan``,
which the host launcher uses; tests/test_cuda_backend.py checks the two agree through
``fastrnn._C.plan``.

H100 SXM: 132 SMs, 227 KB = 232,448 bytes of shared memory per block (opt-in maximum). Example,
LSTM bf16 H=1024 (P=128, U=8), backward (M=8, K=4096, ld=4104), batch 16:
65,664 (A) + 16 * 8,208 = 131,328 (B, BT=16) + 8 * 16 * 16 * 4 = 8,192 (partials) = 205,184 bytes.

Capacities on an H100 (``capacity(G, itemsize)`` with the defaults below; 16-bit = bf16, fp16):

    Elman fp32 2640, 16-bit 3728    GRU fp32 1456, 16-bit 2112    LSTM fp32 1292, 16-bit 1848

Registers are not the limit (256 threads per block, one block per SM). Other GPUs: the backend
passes the device's own SM count and opt-in shared memory.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

H100_SMS = 132
H100_SMEM_PER_BLOCK = 232_448  # 227 KB, cudaDevAttrMaxSharedMemoryPerBlockOptin

MAX_BATCH_TILE = 64  # kMaxBatchTile in kernels/layout.cuh (8 n-tiles of 8)


class Plan(NamedTuple):
    blocks: int  # 0: does not fit
    units: int
    batch_tile: int
    smem: int


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


WARPS = 8  # kWarps in kernels/layout.cuh (256 threads per block)
TILE_M, TILE_N, TILE_K = 16, 8, 16  # one mma.m16n8k16


def smem_bytes(gates: int, itemsize: int, hidden: int, units: int, batch_tile: int, backward: bool) -> int:
    """``fastrnn::smem_bytes``: the A, B and partials regions of one block."""
    rows = units if backward else gates * units
    k = gates * hidden if backward else hidden
    ld = _align(k, TILE_K) + 8
    m_tiles = -(-rows // TILE_M)
    partial_ld = _align(batch_tile, TILE_N)
    return _align(rows * ld * itemsize, 16) + _align(batch_tile * ld * itemsize, 16) + WARPS * m_tiles * TILE_M * partial_ld * 4


# kPreferredBlocksForward / kPreferredBlocksBackward in kernels/layout.cuh: units per block as a
# choice per direction (fewer, wider blocks move less through L2; see the comment there).
PREFERRED_BLOCKS = {False: 64, True: 48}


def plan_for_blocks(gates: int, itemsize: int, hidden: int, batch: int, max_blocks: int, smem_per_block: int,
                    backward: bool) -> Plan:
    """Python twin of ``fastrnn::plan_for_blocks`` in kernels/layout.cuh."""
    if hidden <= 0 or max_blocks <= 0:
        return Plan(0, 0, 0, 0)
    blocks = min(hidden, max_blocks)
    units = -(-hidden // blocks)
    used = -(-hidden // units)
    for tile in range(min(max(batch, 1), MAX_BATCH_TILE), 0, -1):
        nbytes = smem_bytes(gates, itemsize, hidden, units, tile, backward)
        if nbytes <= smem_per_block:
            rows = max(batch, 1)
            tile = -(-rows // -(-rows // tile))  # balanced: ceil(B / passes)
            return Plan(used, units, tile, smem_bytes(gates, itemsize, hidden, units, tile, backward))
    return Plan(0, 0, 0, 0)


def plan(gates: int, itemsize: int, hidden: int, batch: int, num_sms: int, smem_per_block: int, backward: bool) -> Plan:
    """Python twin of ``fastrnn::make_plan`` in kernels/layout.cuh: the direction's preferred block
    count where it keeps the batch in as few passes as one block per SM would, else one per SM."""
    wide = plan_for_blocks(gates, itemsize, hidden, batch, num_sms, smem_per_block, backward)
    preferred = PREFERRED_BLOCKS[bool(backward)]
    if wide.blocks == 0 or preferred >= num_sms:
        return wide
    narrow = plan_for_blocks(gates, itemsize, hidden, batch, preferred, smem_per_block, backward)
    rows = max(batch, 1)
    if narrow.blocks > 0 and -(-rows // narrow.batch_tile) <= -(-rows // wide.batch_tile):
        return narrow
    return wide


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
