"""The autograd Function of the CPU backend: torch GEMMs around the fused C++ recurrence.

Same structure as the GPU backends (:mod:`fastrnn.fused` holds the shared GEMMs):

Forward (one layer-direction):
    gx, b_hn = fused.input_projection(...)                  one GEMM for all T steps
    out, h_T, c_T, saved = _cpu.forward(isa, cell, reverse, gx, W_hh packed, b_hn, h0, c0, lengths, save)

Backward:
    dgx, dgh_n, dh0, dc0 = _cpu.backward(isa, cell, reverse, dout, dh_T, dc_T, W_hh packed, saved, out, h0, c0, lengths)
    dx, dW_ih, dW_hh, db_ih, db_hh = fused.input_and_weight_grads(...)   GEMMs over all steps

The forward saves activations (csrc/cpu/cells.h: none for Elman, 5 values per unit and step for
LSTM, 4 for GRU) only when an input needs a gradient. Double backward: recomputed differentiably
on the reference (fused.differentiable_backward).
"""

from __future__ import annotations

import collections
from typing import Optional

import torch
from torch import Tensor

from fastrnn import _cpu

from ..cells import CELLS
from ..fused import (backward_outputs, differentiable_backward, input_projection, run_layer, save_inputs, saved_inputs,
                     TrainingForm)
from . import isa as isa_module
from .weights import packed


# How many times each kernel ran in this process ("forward", "backward"): the tests read it to
# prove the CPU kernels (not a fallback) ran.
LAUNCHES: collections.Counter = collections.Counter()
# Tests set this: kernel outputs start NaN-filled, so an element left unwritten cannot pass.
POISON = False


_WIDTHS: dict = {}  # instruction set -> floats per vector (the panel width of the packed weights)


def _width(isa: str) -> int:
    if isa not in _WIDTHS:
        _WIDTHS[isa] = _cpu.vector_width(isa_module.isa_id(isa))
    return _WIDTHS[isa]


def forward_pass(cell, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh, save: bool = True,
                 isa: Optional[str] = None):
    """The forward of one layer-direction: -> (out, h_T, c_T (LSTM), saved (empty unless
    ``save``)) on instruction set ``isa`` (default :func:`fastrnn.cpu.isa.current`)."""
    isa = isa or isa_module.current()
    gx, b_hn = input_projection(not cell.sums_preactivations, x, w_ih, b_ih, b_hh)
    result = _cpu.forward(
        isa_module.isa_id(isa), cell.kernel_id, reverse, gx, packed(w_hh, cell.num_gates, _width(isa), "forward"),
        b_hn, h0.contiguous(), c0.contiguous() if cell.has_cell_state else None, lengths, save, POISON)
    LAUNCHES["forward"] += 1
    return result


def backward_pass(cell, reverse: bool, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved,
                  isa: Optional[str] = None):
    """The kernel part of the backward: -> (dgx, dgh_n (GRU), dh0, dc0 (LSTM)) on instruction
    set ``isa`` (default: the current one)."""
    isa = isa or isa_module.current()
    # Gradients of unused outputs arrive as None under some autograd paths: zeros then.
    zeros = torch.zeros(h0.shape, dtype=h0.dtype)
    dout = dout.contiguous() if dout is not None else torch.zeros_like(out)
    dh_t = dh_t.contiguous() if dh_t is not None else zeros
    dc_arg, c0_arg = None, None
    if cell.has_cell_state:
        dc_arg = dc_t.contiguous() if dc_t is not None else zeros
        c0_arg = c0.contiguous()
    result = _cpu.backward(
        isa_module.isa_id(isa), cell.kernel_id, reverse, dout, dh_t, dc_arg,
        packed(w_hh, cell.num_gates, _width(isa), "backward"), saved, out, h0.contiguous(), c0_arg, lengths, POISON)
    LAUNCHES["backward"] += 1
    return result


class CpuLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell_name: str, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell = CELLS[cell_name]
        save = any(ctx.needs_input_grad[3:])  # a backward may follow
        ctx.isa = isa_module.current()  # the backward runs where the forward ran
        out, h_t, c_t, saved = forward_pass(cell, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh, save, ctx.isa)
        save_inputs(ctx, cell_name, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, out, saved)
        return (out, h_t, c_t) if cell.has_cell_state else (out, h_t)

    @staticmethod
    def backward(ctx, dout: Tensor, dh_t: Tensor, dc_t: Optional[Tensor] = None):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            return differentiable_backward(ctx, (dout, dh_t, dc_t))
        (x, h0, c0, w_ih, w_hh, _, _), lengths, (out, saved) = saved_inputs(ctx)
        cell = CELLS[ctx.cell_name]
        dgx, dghn, dh0, dc0 = backward_pass(cell, ctx.reverse, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved,
                                            ctx.isa)
        return backward_outputs(ctx, not cell.sums_preactivations, cell.has_cell_state, dgx, dghn, dh0, dc0, x, w_ih, out, h0, lengths)


def cpu_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """Backend entry point, signature of :func:`fastrnn.reference.reference_layer`."""
    return run_layer(CpuLayer, "CPU", cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                     weight_hr, lengths, reverse)


# The training form of compiled training (fastrnn/ops.py): the kernels called directly.
TRAINING = TrainingForm(forward_pass, backward_pass)
