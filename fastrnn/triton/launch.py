"""How the Triton kernels are launched: the regime of a layer-direction and the large-H launches.

The one place that decides the launch regime (:func:`make_plan`): the small-H kernels
(forward.py / backward.py: one program per batch tile with all of W_hh) up to
capacity.small_h_capacity, else the large-H kernels (large_h.py: W_hh split in slices of 16
hidden units), persistent with a grid barrier per step when all slices can be resident at once,
else one launch per step.

Launching the large-H kernels (large_h.py): grid size, cooperative launch, stall fallback.

The persistent mode runs all T steps in one launch with a grid barrier per step, which is only
correct when every program of the grid is resident at once. Three guards make a wrong guess an
error instead of a hang:

1. Grid size from the compiled kernel's occupancy: programs per SM from its registers, shared
   memory and warps against the device's limits (``programs_per_sm``), times the SM count; the
   grid is P slices x groups batch groups with P * groups <= that (``size_grid``), else
   step-wise.
2. A cooperative launch (``launch_cooperative_grid=True``, in Triton 3.6 and 3.8 alike): the
   driver refuses a grid that cannot be co-resident *now* (another stream's kernels, MPS, a
   partitioned GPU) with an error, rather than starting it; the launcher then runs step-wise.
3. A bounded wait (large_h.grid_barrier): after ``MAX_SPINS`` polls a barrier reports a stall
   through a flag; the programs skip their remaining steps and the host reruns the whole layer
   step-wise (one launch per step: the launch boundary is the barrier), with a warning, and
   stays step-wise on that device for the rest of the process.

Reading the flag costs one device-to-host copy (a synchronisation) per persistent launch. While
a CUDA graph is being captured no synchronisation is allowed: there the layer runs step-wise.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import triton

from .backend import interpreting
from .capacity import MIN_BLOCK, block_size, small_h_capacity

BLOCK_B = 16  # sequences per program; tl.dot needs >= 16 rows

# Polls of the barrier counter before a wait counts as a stall. One poll is an L2 round trip
# (~0.5-1 us), so about 2-4 s: far beyond any real step (microseconds to milliseconds), short
# enough that a stall surfaces as an error.
MAX_SPINS = 1 << 22

# Devices (index) whose persistent launch stalled or was refused: step-wise from then on.
_STEPWISE_DEVICES: set = set()

# Test hook: the value the barrier counters start from. -1 makes every barrier unreachable (the
# counter reaches P - 1 < P), so a persistent launch stalls and falls back.
COUNTER_START = 0


# Safety valve while the grid barrier is unverified on hardware: FASTRNN_TRITON_STEPWISE=1 makes
# the large-H regime launch once per step instead of relying on co-resident programs.
STEPWISE_ENV = "FASTRNN_TRITON_STEPWISE"

# Test hook: force the large-H regime with this slice width (and persistent or step-wise mode)
# for hidden sizes the small-H kernels would take, e.g. {"block_hs": 16, "persistent": False},
# optionally with "groups" (batch groups: fewer than batch tiles makes programs loop over tiles).
FORCE_LARGE_H: Optional[dict] = None



@dataclass(frozen=True)
class Plan:
    """How one layer-direction is launched."""

    large_h: bool  # False: small-H kernels (forward.py, backward.py); True: large_h.py
    block_h: int  # padded hidden size
    block_hs: int  # large-H: hidden units per program (slice width)
    persistent: bool  # large-H: one launch with a grid barrier per step (else one launch per step)
    num_warps: int  # the backward kernel's warps
    groups: int  # grid size along the batch: small-H one program per tile; large-H batch groups
    forward_warps: int = 4  # the forward kernel's warps (kernel_shape)
    fma_ks: int = 1  # the forward kernel's FMA_KS: K chunks of an fp32 FMA dot (kernel_shape)

    def slices(self, hidden: int) -> int:
        return triton.cdiv(hidden, self.block_hs)


def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def kernel_shape(large_h: bool, block_h: int, block_hs: int, num_gates: int, fma: bool) -> tuple:
    """-> (backward warps, forward warps, FMA_KS) for a layer-direction's kernels; ``fma``: the
    dots are fp32 on FMA units (DOT_PRECISION "ieee"). These are the choices under which ptxas
    keeps every kernel out of local memory on sm_90 (bench/kernel_resources.py --triton checks
    them at the capacity sizes and at the fp32 large-H sizes below capacity; the measurements
    are in bench/cuda_expectations.md, "Triton register budget").

    An fp32 FMA tl.dot of (16 x K) by (K x N) makes each thread hold its rows and columns of both
    operands over all of K, so it is K, not the tile, that sets the registers: the forward cuts
    K into FMA_KS chunks (cell_step.recurrent_dot's batched form, one chunk per warp) and runs
    8 warps. Measured spill without these: small-H Elman H=128 2968 B (8 warps, K=128; 0 with 4
    chunks), small-H LSTM H=64 416 B (4 warps; 0 with 8), large-H GRU H=512 2216 B (0 with 16
    chunks of 32), large-H forward at 4 warps for H <= 256 up to 5.6 KB (0 with 8). Tensor-core
    dots (bf16, fp16, TF32) keep the shapes they had."""
    if large_h:
        num_warps = 4 if block_h * block_hs <= 64 * 64 else 8
        if not fma:
            return num_warps, num_warps, 1
        # The GRU keeps gh_n apart from gx_n (r multiplies it): at K >= 256 it needs the split
        # the LSTM and Elman forwards do without (those spill with it: 8 B at LSTM H=256).
        return num_warps, 8, max(1, min(16, block_h // 16)) if num_gates == 3 else 1
    num_warps = 4 if block_h <= 64 else 8
    if not fma:
        return num_warps, num_warps, 1
    return num_warps, 8 if block_h >= 64 else num_warps, 4 if block_h >= 128 else 1


def make_plan(batch: int, hidden: int, num_gates: int, dtype: torch.dtype, device: torch.device,
              fma: bool = False) -> Plan:
    """The regime and launch shape of one layer-direction; ``fma``: fp32 dots on FMA units
    (autograd._dot_precision "ieee"), see kernel_shape."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    block_h = block_size(hidden)
    if FORCE_LARGE_H is None and hidden <= small_h_capacity(num_gates, itemsize):
        num_warps, forward_warps, fma_ks = kernel_shape(False, block_h, block_h, num_gates, fma)
        return Plan(False, block_h, block_h, False, num_warps, triton.cdiv(batch, BLOCK_B), forward_warps, fma_ks)
    batch_tiles = triton.cdiv(batch, BLOCK_B)
    sms = 1 if interpreting() or device.type != "cuda" else _num_sms(device)
    if FORCE_LARGE_H is not None:
        block_hs = FORCE_LARGE_H["block_hs"]
        persistent = FORCE_LARGE_H["persistent"]
        if persistent and interpreting() and triton.cdiv(hidden, block_hs) > 1:
            raise ValueError("the interpreter runs programs one by one: a barrier over P > 1 deadlocks")
    else:
        # Slices of 16 units (capacity.py measured these); persistent when all slices can be
        # resident at once (one program per SM), else one launch per step.
        block_hs = MIN_BLOCK
        persistent = triton.cdiv(hidden, block_hs) <= sms
        if os.environ.get(STEPWISE_ENV, "0") == "1":
            persistent = False
    slices = triton.cdiv(hidden, block_hs)
    # Batch groups: as many as stay co-resident in persistent mode, one per tile step-wise.
    groups = min(batch_tiles, max(1, sms // slices)) if persistent else batch_tiles
    if FORCE_LARGE_H is not None:
        groups = FORCE_LARGE_H.get("groups", groups)
    num_warps, forward_warps, fma_ks = kernel_shape(True, block_h, block_hs, num_gates, fma)
    return Plan(True, block_h, block_hs, persistent, num_warps, groups, forward_warps, fma_ks)


def step_ranges(seq_len: int, persistent: bool, backward: bool) -> list:
    """The launches of a large-H kernel: (k_begin, k_end[, finish]) each. Persistent: one launch.
    Step-wise: one per step; the backward's last launch only finishes step T-1 (phase A: dh0)."""
    if backward:
        if persistent:
            return [(0, seq_len, 1)]
        return [(k, k + 1, 0) for k in range(seq_len)] + [(seq_len, seq_len, 1)]
    return [(0, seq_len)] if persistent else [(k, k + 1) for k in range(seq_len)]


def programs_per_sm(num_warps: int, regs_per_thread: int, shared_bytes: int, regs_per_sm: int = 65536,
                    threads_per_sm: int = 2048, smem_per_sm: int = 233_472, smem_per_block: int = 232_448,
                    max_blocks: int = 32) -> int:
    """How many programs of a compiled kernel one SM holds at once (the CUDA occupancy rules;
    defaults: sm_90). Registers are allocated per warp in units of 256; each block reserves
    1 KB of shared memory beside its own."""
    if shared_bytes > smem_per_block:
        return 0
    threads = 32 * num_warps
    by_threads = threads_per_sm // threads
    regs_per_warp = -(-max(regs_per_thread, 1) * 32 // 256) * 256
    by_regs = (regs_per_sm // regs_per_warp) // num_warps
    by_smem = smem_per_sm // (shared_bytes + 1024)
    return max(0, min(by_threads, by_regs, by_smem, max_blocks))


def device_programs_per_sm(compiled, device: torch.device) -> tuple:
    """(programs per SM, SMs) for a compiled Triton kernel on ``device``."""
    if hasattr(compiled, "_init_handles"):
        compiled._init_handles()  # loads the binary: n_regs is known from then on
    props = torch.cuda.get_device_properties(device)
    per_sm = programs_per_sm(compiled.metadata.num_warps, compiled.n_regs, compiled.metadata.shared,
                             props.regs_per_multiprocessor, props.max_threads_per_multi_processor,
                             props.shared_memory_per_multiprocessor, props.shared_memory_per_block_optin)
    return per_sm, props.multi_processor_count


def size_grid(slices: int, batch_tiles: int, resident: int, groups: Optional[int] = None) -> tuple:
    """(persistent, groups) for P = ``slices`` programs per batch group when ``resident``
    programs fit the GPU at once: persistent with as many groups as stay co-resident (at most one
    per batch tile), else step-wise with one group per tile. ``groups`` forces the count."""
    if slices > resident:
        return False, groups or batch_tiles
    return True, groups or min(batch_tiles, resident // slices)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def run_large_h(launch: Callable, reset: Callable, steps: Callable, plan, hidden: int, batch_tiles: int,
                device: torch.device, interpreting: bool, forced_groups: Optional[int], what: str):
    """Runs one large-H kernel over the whole sequence; -> the plan it ran with.

    ``launch(grid, steps, persistent, counters, stall, cooperative, warmup)`` launches the
    kernel once per entry of ``steps`` (or, with ``warmup``, only compiles it) and returns the
    compiled kernel; ``steps(persistent)`` is the list of launches of a mode; ``reset()``
    restores the work buffers to their start (a rerun after a stall starts from the initial
    state). Falls back step-wise on a refused or stalled persistent launch (module docstring).
    """
    slices = plan.slices(hidden)
    persistent = plan.persistent and device.index not in _STEPWISE_DEVICES and not _capturing(device)
    groups = plan.groups
    on_gpu = not interpreting and device.type == "cuda"
    counters = torch.full((batch_tiles,), COUNTER_START, dtype=torch.int32, device=device)
    stall = torch.zeros(1, dtype=torch.int32, device=device)
    if persistent and on_gpu:
        compiled = launch((slices, 1), steps(True), True, counters, stall, True, True)
        per_sm, sms = device_programs_per_sm(compiled, device)
        persistent, groups = size_grid(slices, batch_tiles, per_sm * sms, forced_groups)
    if persistent:
        plan = dataclasses.replace(plan, persistent=True, groups=groups)
        try:
            launch((slices, groups), steps(True), True, counters, stall, on_gpu, False)
            stalled, why = bool(stall.item()), "a grid barrier wait timed out"
        except RuntimeError as error:  # the driver refused the cooperative grid
            if "cooperative" not in str(error).lower():
                raise
            stalled, why = True, f"the cooperative launch was refused ({error})"
        if not stalled:
            return plan
        _STEPWISE_DEVICES.add(device.index)
        warnings.warn(f"fastrnn triton {what}: {why}: the {slices * groups} programs were not all resident at "
                      "once; reran this layer with one launch per step, and will on this device from now on",
                      RuntimeWarning, stacklevel=4)
        reset()
    plan = dataclasses.replace(plan, persistent=False, groups=forced_groups or batch_tiles)
    launch((slices, plan.groups), steps(False), False, counters, stall, False, False)
    return plan
