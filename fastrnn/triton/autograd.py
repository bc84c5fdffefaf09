"""The autograd Function of the Triton backend: torch GEMMs around the two persistent kernels.

In Liger-Kernel's shape: the host passes :func:`forward_pass` and :func:`backward_pass` do the
work (buffers, launches; the regime comes from :func:`fastrnn.triton.launch.make_plan`) and
:class:`TritonLayer` only saves and hands over.

Forward (one layer-direction):
    gx, b_hn = fused.input_projection(...)     one GEMM over all T steps (torch)
    out, h_T, c_T, saved = recurrent_forward_kernel(gx, W_hh, b_hn, ...)

Backward:
    dgx, dgh_n, dh0, dc0 = recurrent_backward_kernel(dout, dh_T, dc_T, W_hh, saved, ...)
    dx, dW_ih, dW_hh, db_ih, db_hh = fused.input_and_weight_grads(...)   torch GEMMs (the math
                                               is written out in fastrnn/fused.py)

The forward saves fp32 activations for the backward (cell_ids.NUM_SAVED values per unit and
step: 1 Elman, 5 LSTM, 4 GRU) instead of recomputing them: fast, at (T, B, S*H) * 4 bytes.

Double backward: when autograd records the backward (``create_graph=True``), the backward is
recomputed differentiably on the reference (fused.differentiable_backward) instead of running the
kernel, so second derivatives are exact, never silently cut off at the kernel.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Optional

import torch
import triton
from torch import Tensor

from ..cells import CELLS, Cell
from ..fused import (backward_outputs, differentiable_backward, input_projection, run_layer, save_inputs,
                     saved_inputs, TrainingForm, uses_tf32)
from .backend import interpreting
from .backward import recurrent_backward_kernel
from .cell_ids import NUM_SAVED, kernel_constants
from .forward import recurrent_forward_kernel
from .large_h import sliced_backward_kernel, sliced_forward_kernel
from . import launch as _launch
from .launch import BLOCK_B, Plan, make_plan, run_large_h, step_ranges

# How many times each kernel was launched in this process, by regime ("forward", "backward" for
# the small-H kernels, "large_h_forward", "large_h_backward"); the tests read it to prove the
# Triton kernels (not a fallback) ran. A step-wise large-H run counts one per launch.
LAUNCHES: collections.Counter = collections.Counter()

# Debug switch (the tests turn it on): fill every buffer a kernel must write completely with NaN
# before the launch, so an element the kernel forgets to write shows up as NaN in the results.
POISON = False


def _empty(*shape, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """torch.empty on ``like``'s device (NaN-filled when POISON is on)."""
    out = torch.empty(*shape, device=like.device, dtype=dtype or like.dtype)
    return out.fill_(float("nan")) if POISON else out


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


def _constants(cell: Cell, hidden: int, reverse: bool, plan: Plan, dtype: torch.dtype) -> dict:
    """The constexpr arguments every kernel of a layer-direction takes."""
    return dict(
        H=hidden, **kernel_constants(cell), REVERSE=reverse, BLOCK_B=BLOCK_B, BLOCK_H=plan.block_h,
        DOT_PRECISION=_dot_precision(dtype), WIDEN_WEIGHTS=_widen_weights(dtype), num_warps=plan.num_warps,
    )


def forward_pass(cell: Cell, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """The forward of one layer-direction: -> (out, h_T, c_T (LSTM, else h_T), saved, plan)."""
    seq_len, batch, _ = x.shape
    hidden = w_hh.shape[1]
    gx, b_hn = input_projection(not cell.sums_preactivations, x, w_ih, b_ih, b_hh)
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
    c_t = _empty(batch, hidden, like=h0_c) if cell.has_cell_state else h_t
    saved = _empty(seq_len, batch, NUM_SAVED[cell.kernel_id] * hidden, like=x, dtype=torch.float32)
    plan = make_plan(batch, hidden, cell.num_gates, x.dtype, x.device, fma=_dot_precision(x.dtype) == "ieee")
    # The forward's own shape (launch.kernel_shape): its warps and K chunks of an fp32 FMA dot.
    consts = dict(_constants(cell, hidden, reverse, plan, x.dtype), num_warps=plan.forward_warps, FMA_KS=plan.fma_ks)
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
                            batch, k_begin, k_end, _launch.MAX_SPINS)
                    kw = dict(BLOCK_HS=plan.block_hs, BARRIER=persistent, launch_cooperative_grid=cooperative,
                              **consts)
                    if warmup:
                        return sliced_forward_kernel.warmup(*args, grid=grid, **kw)
                    compiled = sliced_forward_kernel[grid](*args, **kw)
                    LAUNCHES["large_h_forward"] += 1
                return compiled

            reset()
            plan = run_large_h(launch, reset, lambda persistent: step_ranges(seq_len, persistent, False), plan,
                               hidden, triton.cdiv(batch, BLOCK_B), x.device, interpreting(),
                               (_launch.FORCE_LARGE_H or {}).get("groups"), "forward")
            h_t.copy_(hbuf[seq_len % 2])
            if cell.has_cell_state:
                c_t.copy_(cbuf)
    return out, h_t, c_t, saved, plan


def backward_pass(cell: Cell, reverse: bool, plan: Plan, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved):
    """The kernel part of the backward: -> (dgx, dgh_n (GRU, else dgx), dh0, dc0)."""
    seq_len, batch, _ = x.shape
    w_hh = w_hh.contiguous()
    h0 = h0.contiguous()
    hidden = w_hh.shape[1]
    dout = dout.contiguous()
    dh_t = dh_t.contiguous()
    dc_t = dc_t.contiguous() if dc_t is not None else torch.zeros_like(dh_t)
    dgx = _empty(seq_len, batch, cell.num_gates * hidden, like=x)
    dghn = _empty(seq_len, batch, hidden, like=x) if not cell.sums_preactivations else dgx  # GRU: dgh_n apart
    c0_arg = c0.contiguous() if c0 is not None else h0  # never read for non-LSTM cells
    consts = _constants(cell, hidden, reverse, plan, x.dtype)
    with _device_guard(x):  # Triton launches on the current CUDA device
        if not plan.large_h:
            dh0 = _empty(batch, hidden, like=h0)
            dc0 = _empty(batch, hidden, like=h0) if cell.has_cell_state else dh0
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
                            seq_len, batch, k_begin, k_end, finish, _launch.MAX_SPINS)
                    kw = dict(BLOCK_HS=plan.block_hs, BARRIER=persistent, launch_cooperative_grid=cooperative,
                              **consts)
                    if warmup:
                        return sliced_backward_kernel.warmup(*args, grid=grid, **kw)
                    compiled = sliced_backward_kernel[grid](*args, **kw)
                    LAUNCHES["large_h_backward"] += 1
                return compiled

            reset()
            run_large_h(launch, reset, lambda persistent: step_ranges(seq_len, persistent, True), plan, hidden,
                        triton.cdiv(batch, BLOCK_B), x.device, interpreting(),
                        (_launch.FORCE_LARGE_H or {}).get("groups"), "backward")
            dh0 = dhbuf.to(h0.dtype)
            dc0 = dcbuf.to(h0.dtype)
    return dgx, dghn, dh0, dc0


class TritonLayer(torch.autograd.Function):
    """(cell name, reverse, int32 lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (out, h_T[, c_T])."""

    @staticmethod
    def forward(ctx, cell_name: str, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell = CELLS[cell_name]
        out, h_t, c_t, saved, ctx.plan = forward_pass(cell, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        save_inputs(ctx, cell_name, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, out, saved)
        return (out, h_t, c_t) if cell.has_cell_state else (out, h_t)

    @staticmethod
    def backward(ctx, dout: Tensor, dh_t: Tensor, dc_t: Optional[Tensor] = None):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            return differentiable_backward(ctx, (dout, dh_t, dc_t))
        (x, h0, c0, w_ih, w_hh, _, _), lengths, (out, saved) = saved_inputs(ctx)
        cell = CELLS[ctx.cell_name]
        dgx, dghn, dh0, dc0 = backward_pass(cell, ctx.reverse, ctx.plan, dout, dh_t, dc_t, x, h0, c0, w_hh,
                                            lengths, out, saved)
        return backward_outputs(ctx, not cell.sums_preactivations, cell.has_cell_state, dgx, dghn, dh0, dc0, x,
                                w_ih, out, h0, lengths)


def triton_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """Backend entry point, signature of :func:`fastrnn.reference.reference_layer`."""
    return run_layer(TritonLayer, "Triton", cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                     weight_hr, lengths, reverse)


def _forward_saving(cell, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    return forward_pass(cell, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)[:4]


def _backward_from_saved(cell, reverse, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved):
    # The plan again from the sizes: the same tiles and warps as the forward's; run_large_h
    # decides the large-H launch mode again as it did there.
    plan = make_plan(x.shape[1], w_hh.shape[1], cell.num_gates, x.dtype, x.device)
    return backward_pass(cell, reverse, plan, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved)


# The training form of compiled training (fastrnn/ops.py): the kernels called directly.
TRAINING = TrainingForm(_forward_saving, _backward_from_saved)
