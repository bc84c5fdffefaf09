"""The autograd Function of the Triton backend: torch GEMMs around the two persistent kernels.

Forward (one layer-direction):
    gx, b_hn = fused.input_projection(...)     one GEMM over all T steps (torch)
    out, h_T, c_T, saved = recurrent_forward_kernel(gx, W_hh, b_hn, ...)

Backward:
    dgx, dgh_n, dh0, dc0 = recurrent_backward_kernel(dout, dh_T, dc_T, W_hh, saved, ...)
    dx, dW_ih, dW_hh, db_ih, db_hh = fused.input_and_weight_grads(...)   torch GEMMs (the math
                                               is written out in fastrnn/fused.py)

Regime (make_plan): the small-H kernels (forward.py / backward.py: one program per batch tile
with all of W_hh) up to capacity.small_h_capacity, else the large-H kernels (large_h.py: W_hh
split in slices of 16 hidden units), persistent with a grid barrier when the compiled kernel's
occupancy lets all slices be resident at once, else one launch per step (launch.py: cooperative
launch, bounded barrier wait, step-wise rerun on a stall).

The forward saves fp32 activations for the backward (cell_ids.NUM_SAVED values per unit and
step: 1 Elman, 5 LSTM, 4 GRU) instead of recomputing them: fast, at (T, B, S*H) * 4 bytes.

Double backward: when autograd records the backward (``create_graph=True``), the backward is
recomputed differentiably on the reference (fused.differentiable_backward) instead of running the
kernel, so second derivatives are exact, never silently cut off at the kernel.
"""

from __future__ import annotations

import collections
import contextlib
import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
from torch import Tensor

from ..fused import (backward_outputs, differentiable_backward, input_projection, run_layer, save_inputs,
                     saved_inputs, uses_tf32)
from .backend import interpreting
from .backward import recurrent_backward_kernel
from .capacity import MIN_BLOCK, block_size, small_h_capacity
from .cell_ids import CELL_IDS, LSTM, GRU, NUM_SAVED
from .forward import recurrent_forward_kernel
from .large_h import sliced_backward_kernel, sliced_forward_kernel
from . import launch as launch_config
from .launch import run_large_h

# How many times each kernel was launched in this process, by regime ("forward", "backward" for
# the small-H kernels, "large_h_forward", "large_h_backward"); the tests read it to prove the
# Triton kernels (not a fallback) ran. A step-wise large-H run counts one per launch.
LAUNCHES: collections.Counter = collections.Counter()

BLOCK_B = 16  # sequences per program; tl.dot needs >= 16 rows

# Debug switch (the tests turn it on): fill every buffer a kernel must write completely with NaN
# before the launch, so an element the kernel forgets to write shows up as NaN in the results.
POISON = False

# Safety valve while the grid barrier is unverified on hardware: FASTRNN_TRITON_STEPWISE=1 makes
# the large-H regime launch once per step instead of relying on co-resident programs.
STEPWISE_ENV = "FASTRNN_TRITON_STEPWISE"

# Test hook: force the large-H regime with this slice width (and persistent or step-wise mode)
# for hidden sizes the small-H kernels would take, e.g. {"block_hs": 16, "persistent": False},
# optionally with "groups" (batch groups: fewer than batch tiles makes programs loop over tiles).
FORCE_LARGE_H: Optional[dict] = None


def _empty(*shape, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """torch.empty on ``like``'s device (NaN-filled when POISON is on)."""
    out = torch.empty(*shape, device=like.device, dtype=dtype or like.dtype)
    return out.fill_(float("nan")) if POISON else out


@dataclass(frozen=True)
class Plan:
    """How one layer-direction is launched."""

    large_h: bool  # False: small-H kernels (forward.py, backward.py); True: large_h.py
    block_h: int  # padded hidden size
    block_hs: int  # large-H: hidden units per program (slice width)
    persistent: bool  # large-H: one launch with a grid barrier per step (else one launch per step)
    num_warps: int
    groups: int  # grid size along the batch: small-H one program per tile; large-H batch groups

    def slices(self, hidden: int) -> int:
        return triton.cdiv(hidden, self.block_hs)


def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def make_plan(batch: int, hidden: int, num_gates: int, dtype: torch.dtype, device: torch.device) -> Plan:
    itemsize = torch.empty((), dtype=dtype).element_size()
    block_h = block_size(hidden)
    if FORCE_LARGE_H is None and hidden <= small_h_capacity(num_gates, itemsize):
        return Plan(False, block_h, block_h, False, 4 if block_h <= 64 else 8, triton.cdiv(batch, BLOCK_B))
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
    return Plan(True, block_h, block_hs, persistent, 4 if block_h * block_hs <= 64 * 64 else 8, groups)


def _steps(seq_len: int, persistent: bool, backward: bool) -> list:
    """The launches of a large-H kernel: (k_begin, k_end[, finish]) each. Persistent: one launch.
    Step-wise: one per step; the backward's last launch only finishes step T-1 (phase A: dh0)."""
    if backward:
        if persistent:
            return [(0, seq_len, 1)]
        return [(k, k + 1, 0) for k in range(seq_len)] + [(seq_len, seq_len, 1)]
    return [(0, seq_len)] if persistent else [(k, k + 1) for k in range(seq_len)]


def _device_guard(tensor: Tensor):
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _dot_precision(dtype: torch.dtype) -> str:
    # fp16/bf16 ignore the precision; fp32 takes TF32 only where torch allows it (fused.uses_tf32).
    return "ieee" if dtype == torch.float32 and not uses_tf32(dtype) else "tf32"


def _widen_weights(dtype: torch.dtype) -> bool:
    """Triton 3.8's interpreter computes tl.dot of bfloat16 tiles wrongly (numpy has no bfloat16;
    the products come out as garbage), so under TRITON_INTERPRET=1 the kernels widen the bf16
    weight tiles to fp32 (exact) and dot in fp32. Compiled kernels never take this path."""
    return dtype == torch.bfloat16 and interpreting()


class TritonLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell_name: str, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell = CELL_IDS[cell_name]
        seq_len, batch, _ = x.shape
        gates = w_hh.shape[0]
        hidden = w_hh.shape[1]
        num_gates = gates // hidden
        gx, b_hn = input_projection(cell == GRU, x, w_ih, b_ih, b_hh)
        if b_hn is None:  # the kernels take a b_hn pointer for every cell
            b_hn = w_hh.new_zeros(hidden)
        # The kernels index h0, c0 and W_hh as dense row-major arrays; the Function's own inputs
        # (what backward saves) stay as given.
        w_hh_c = w_hh.contiguous()
        h0_c = h0.contiguous()
        c0_arg = c0.contiguous() if c0 is not None else h0_c  # never read for non-LSTM cells

        # Not zero-filled: the kernel writes every element (the tests check that with POISON).
        out = _empty(seq_len, batch, hidden, like=x)
        h_t = _empty(batch, hidden, like=h0_c)
        c_t = _empty(batch, hidden, like=h0_c) if cell == LSTM else h_t
        saved = _empty(seq_len, batch, NUM_SAVED[cell] * hidden, like=x, dtype=torch.float32)
        plan = make_plan(batch, hidden, num_gates, x.dtype, x.device)
        consts = dict(
            H=hidden, G=num_gates, S=NUM_SAVED[cell], CELL=cell, REVERSE=reverse, BLOCK_B=BLOCK_B,
            BLOCK_H=plan.block_h, DOT_PRECISION=_dot_precision(x.dtype),
            WIDEN_WEIGHTS=_widen_weights(x.dtype), num_warps=plan.num_warps,
        )
        with _device_guard(x):  # Triton launches on the current CUDA device
            if not plan.large_h:
                recurrent_forward_kernel[(triton.cdiv(batch, BLOCK_B),)](
                    gx, w_hh_c, b_hn, h0_c, c0_arg, lengths, out, h_t, c_t, saved, seq_len, batch, **consts
                )
                LAUNCHES["forward"] += 1
            else:
                hbuf = _empty(2, batch, hidden, like=x, dtype=torch.float32)
                hdot = _empty(2, batch, hidden, like=w_hh_c)
                cbuf = torch.empty(batch, hidden, device=x.device, dtype=torch.float32)

                def reset():
                    hbuf[0].copy_(h0_c)
                    hdot[0].copy_(h0_c)
                    cbuf.copy_(c0_arg)

                def launch(grid, steps, persistent, counters, stall, cooperative, warmup):
                    for k_begin, k_end in steps:
                        args = (gx, w_hh_c, b_hn, hbuf, hdot, cbuf, lengths, out, saved, counters, stall, seq_len,
                                batch, k_begin, k_end, launch_config.MAX_SPINS)
                        kw = dict(BLOCK_HS=plan.block_hs, BARRIER=persistent, launch_cooperative_grid=cooperative,
                                  **consts)
                        if warmup:
                            return sliced_forward_kernel.warmup(*args, grid=grid, **kw)
                        compiled = sliced_forward_kernel[grid](*args, **kw)
                        LAUNCHES["large_h_forward"] += 1
                    return compiled

                reset()
                plan = run_large_h(launch, reset, lambda persistent: _steps(seq_len, persistent, False), plan,
                                   hidden, triton.cdiv(batch, BLOCK_B), x.device, interpreting(),
                                   (FORCE_LARGE_H or {}).get("groups"), "forward")
                h_t.copy_(hbuf[seq_len % 2])
                if cell == LSTM:
                    c_t.copy_(cbuf)
        ctx.plan, ctx.cell, ctx.num_gates = plan, cell, num_gates
        save_inputs(ctx, cell_name, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, out, saved)
        if cell == LSTM:
            return out, h_t, c_t
        return out, h_t

    @staticmethod
    def backward(ctx, dout: Tensor, dh_t: Tensor, dc_t: Optional[Tensor] = None):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            return differentiable_backward(ctx, (dout, dh_t, dc_t))
        (x, h0, c0, w_ih, w_hh, _, _), lengths, (out, saved) = saved_inputs(ctx)
        w_hh = w_hh.contiguous()
        h0 = h0.contiguous()
        cell, num_gates = ctx.cell, ctx.num_gates
        seq_len, batch, _ = x.shape
        hidden = w_hh.shape[1]
        dout = dout.contiguous()
        dh_t = dh_t.contiguous()
        dc_t = dc_t.contiguous() if dc_t is not None else torch.zeros_like(dh_t)
        dgx = _empty(seq_len, batch, num_gates * hidden, like=x)
        dghn = _empty(seq_len, batch, hidden, like=x) if cell == GRU else dgx
        plan = ctx.plan
        c0_arg = c0.contiguous() if c0 is not None else h0  # never read for non-LSTM cells
        consts = dict(
            H=hidden, G=num_gates, S=NUM_SAVED[cell], CELL=cell, REVERSE=ctx.reverse, BLOCK_B=BLOCK_B,
            BLOCK_H=plan.block_h, DOT_PRECISION=_dot_precision(x.dtype),
            WIDEN_WEIGHTS=_widen_weights(x.dtype), num_warps=plan.num_warps,
        )
        with _device_guard(x):  # Triton launches on the current CUDA device
            if not plan.large_h:
                dh0 = _empty(batch, hidden, like=h0)
                dc0 = _empty(batch, hidden, like=h0) if cell == LSTM else dh0
                recurrent_backward_kernel[(triton.cdiv(batch, BLOCK_B),)](
                    dout, dh_t, dc_t, w_hh, saved, out, h0, c0_arg, lengths, dgx, dghn, dh0, dc0,
                    seq_len, batch, **consts
                )
                LAUNCHES["backward"] += 1
            else:
                dhbuf = torch.empty(batch, hidden, device=x.device, dtype=torch.float32)
                dcbuf = torch.empty(batch, hidden, device=x.device, dtype=torch.float32)

                def reset():
                    dhbuf.copy_(dh_t)
                    dcbuf.copy_(dc_t)

                def launch(grid, steps, persistent, counters, stall, cooperative, warmup):
                    for k_begin, k_end, finish in steps:
                        args = (dout, w_hh, saved, out, h0, c0_arg, lengths, dgx, dghn, dhbuf, dcbuf, counters, stall,
                                seq_len, batch, k_begin, k_end, finish, launch_config.MAX_SPINS)
                        kw = dict(BLOCK_HS=plan.block_hs, BARRIER=persistent, launch_cooperative_grid=cooperative,
                                  **consts)
                        if warmup:
                            return sliced_backward_kernel.warmup(*args, grid=grid, **kw)
                        compiled = sliced_backward_kernel[grid](*args, **kw)
                        LAUNCHES["large_h_backward"] += 1
                    return compiled

                reset()
                run_large_h(launch, reset, lambda persistent: _steps(seq_len, persistent, True), plan, hidden,
                            triton.cdiv(batch, BLOCK_B), x.device, interpreting(),
                            (FORCE_LARGE_H or {}).get("groups"), "backward")
                dh0 = dhbuf.to(h0.dtype)
                dc0 = dcbuf.to(h0.dtype)

        return backward_outputs(ctx, cell == GRU, cell == LSTM, dgx, dghn, dh0, dc0, x, w_ih, out, h0, lengths)


def triton_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """Backend entry point, signature of :func:`fastrnn.reference.reference_layer`."""
    return run_layer(TritonLayer, "Triton", cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                     weight_hr, lengths, reverse)
