"""How large a hidden size the Triton kernels take: the one place, used by ``backend.unsupported``.

Both regimes keep ``W_hh`` on chip for all T steps; the kernels pad the hidden size to
``BLOCK_H = next_power_of_2(H)`` (at least 16: ``tl.arange`` and ``tl.dot`` need it).

Small-H regime (forward.py, backward.py): one program per tile of 16 sequences holds all of
``W_hh``: weight bytes per program = G * BLOCK_H^2 * itemsize (G = 1 Elman, 3 GRU, 4 LSTM).
Large-H regime (large_h.py): P = cdiv(H, 16) programs per batch group, each holding a
(BLOCK_H x 16) slice per gate: G * BLOCK_H * 16 * itemsize, plus a (16 x BLOCK_H) fp32 tile of
h_{t-1} (forward) or of the gate gradients (backward) read from L2 every step.

H100 per block: 227 KB shared memory, 64K registers (255 per thread). Triton keeps the
loop-invariant ``tl.dot`` operand (the ``W_hh`` tiles) in *shared memory* and stages the other
operand through it as well, so shared memory is the binding limit. The limits below are the
largest padded sizes whose compiled kernels (forward *and* backward) fit 227 KB, measured by
compiling for sm_90 without a GPU with the JIT's own specialisation (every pointer argument
16-byte aligned: ``tt.divisibility=16``; without it the figures understated shared memory by
up to 33 KiB), ``python -m fastrnn.triton.resources``, Triton 3.8 and 3.6 alike:

    small-H    weights (G*BLOCK_H^2*size)   smem fwd / bwd (KiB)  next size up
    Elman fp32  H<=128   64 KB              72 / 112              256: 256 KB of weights
    Elman 16b   H<=256  128 KB             144 / 188              512: 512 KB of weights
    GRU   fp32  H<=64    48 KB              52 / 116              128: 192 KB of weights
    GRU   16b   H<=128   96 KB             104 / 200              256: 384 KB of weights
    LSTM  fp32  H<=64    64 KB              68 / 144              128: 256 KB of weights
    LSTM  16b   H<=64    32 KB              36 /  98              128: bwd needs > 227 KiB

    large-H    slice (G*BLOCK_H*16*size)    smem fwd / bwd (KiB)  next size up
    Elman fp32  H<=1024  64 KB             192 / 128              2048: fwd 384 KiB
    Elman 16b   H<=2048  64 KB             193 / 128              4096: > 256 KiB
    GRU   fp32  H<=512   96 KB             160 / 160              1024: slice alone 192 KB
    GRU   16b   H<=1024  96 KB             161 / 160              2048: slice alone 192 KB
    LSTM  fp32  H<=512  128 KB             192 / 224              1024: slice alone 256 KB
    LSTM  16b   H<=1024 128 KB             193 / 224              2048: slice alone 256 KB

("16b" = bfloat16 and float16, same sizes; fp32 compiled with ``ieee`` dot precision.) The
large-H forward exchanges h_{t-1} in the weights' dtype: with an fp32 exchange buffer the
16-bit LSTM at H=1024 needed 288 KiB (the h tile is staged through shared memory on its way into
``tl.dot``). The LSTM backward at the top sizes (224 KiB) leaves little room: a Triton upgrade
that stages differently could push it over, so rerun ``resources`` after upgrading.
Registers and stack (Triton 3.8 / 3.6): the 16-bit large-H LSTM and GRU forward use 255
registers with a 330-540 B spill stack; fp32 kernels that compile to 32-64 registers carry a
stack instead: small-H Elman forward fp32 2.9 KB, large-H Elman forward 16-bit 3.3 KB, large-H
GRU forward fp32 2.2 KB; the small-H LSTM (both) and GRU (3.6) fp32 forwards use 255 registers
and 0.1-0.4 KB of stack. These are compile-time facts; what they cost must be measured on the
GPU (bench/GPU_CHECK.md).

The large-H regime needs all P * groups programs resident at once for its grid barrier:
P = cdiv(H, 16) <= 128 at these sizes, so it fits the 132 SMs of an H100 (one program per SM at
these shared-memory sizes); launch.py sizes the grid from the compiled kernel's occupancy,
launches it cooperatively and, where it cannot be co-resident (smaller or shared GPUs), runs it
step-wise (one launch per step). The design's anchor problem, LSTM H=768 bf16, runs large-H
with P = 48.
"""

from __future__ import annotations

MIN_BLOCK = 16  # tl.dot needs every dimension >= 16; also the large-H slice width

# (number of gates, itemsize in bytes) -> largest hidden size; see the module docstring.
SMALL_H_CAPACITY = {(1, 4): 128, (1, 2): 256, (3, 4): 64, (3, 2): 128, (4, 4): 64, (4, 2): 64}
LARGE_H_CAPACITY = {(1, 4): 1024, (1, 2): 2048, (3, 4): 512, (3, 2): 1024, (4, 4): 512, (4, 2): 1024}


def block_size(n: int) -> int:
    """Padded tile size for ``n`` hidden units: the next power of two, at least 16."""
    block = MIN_BLOCK
    while block < n:
        block *= 2
    return block


def small_h_capacity(num_gates: int, itemsize: int) -> int:
    """Largest hidden size the small-H kernels (whole W_hh in one program) take."""
    return SMALL_H_CAPACITY.get((num_gates, itemsize), 0)


def large_h_capacity(num_gates: int, itemsize: int) -> int:
    """Largest hidden size the large-H kernels (W_hh split in slices of 16 units) take."""
    return LARGE_H_CAPACITY.get((num_gates, itemsize), 0)


def capacity(num_gates: int, itemsize: int) -> int:
    """Largest hidden size the Triton backend takes (either regime)."""
    return max(small_h_capacity(num_gates, itemsize), large_h_capacity(num_gates, itemsize))
