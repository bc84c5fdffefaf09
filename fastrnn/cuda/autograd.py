"""The autograd Function of the CUDA backend: torch GEMMs around the two persistent kernels.

Same structure as :mod:`fastrnn.triton.autograd` (Liger-Kernel's shape: host passes
:func:`forward_pass` / :func:`backward_pass`, a short Function around them); the GEMMs around the kernels (input
projection, dx, dW_ih, dW_hh, biases) are :mod:`fastrnn.fused`'s:

Forward (one layer-direction):
    gx, b_hn = fused.input_projection(...)
    out, h_T, c_T, saved = _C.rnn_forward(cell, reverse, tf32, gx, W_hh, b_hn, h0, c0, lengths)

Backward:
    dgx, dgh_n, dh0, dc0 = _C.rnn_backward(cell, reverse, tf32, dout, dh_T, dc_T, W_hh, saved, lengths)
    dx, dW_ih, dW_hh, db_ih, db_hh = fused.input_and_weight_grads(...)

tf32 = fused.uses_tf32(dtype): float32 recurrent products on TF32 tensor cores only where torch
allows TF32 for matmuls; bf16/fp16 always run them on tensor cores (kernels/block_product.cuh).

The forward saves fp32 activations (kernels/cell_math.cuh: 1 value per unit and step for Elman,
5 for LSTM and GRU). Double backward: when autograd records the backward (``create_graph=True``)
it is recomputed differentiably on the reference (fused.differentiable_backward).
"""

from __future__ import annotations

import collections
from typing import Optional

import torch
from torch import Tensor

from fastrnn import _C

from ..cells import CELLS, Cell
from ..fused import (backward_outputs, differentiable_backward, input_projection, run_layer, save_inputs,
                     saved_inputs, TrainingForm, uses_tf32)

# How many times each kernel was launched in this process ("forward", "backward"): the tests
# read it to prove the CUDA kernels (not a fallback) ran.
LAUNCHES: collections.Counter = collections.Counter()


def forward_pass(cell: Cell, reverse: bool, tf32: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """The forward of one layer-direction: -> (out, h_T, c_T (LSTM, else undefined), saved)."""
    gru = not cell.sums_preactivations  # b_hn goes to the kernel
    gx, b_hn = input_projection(gru, x, w_ih, b_ih, b_hh)
    if gru and b_hn is None:
        b_hn = w_hh.new_zeros(w_hh.shape[1])
    # _C requires contiguous tensors; the Function's own inputs (what backward saves) stay as given.
    c0_arg = c0.contiguous() if cell.has_cell_state else None
    out, h_t, c_t, saved = _C.rnn_forward(cell.kernel_id, reverse, tf32, gx, w_hh.contiguous(), b_hn,
                                          h0.contiguous(), c0_arg, lengths)
    LAUNCHES["forward"] += 1
    return out, h_t, c_t, saved


def backward_pass(cell: Cell, reverse: bool, tf32: bool, dout, dh_t, dc_t, h0, w_hh, lengths, out, saved):
    """The kernel part of the backward: -> (dgx, dgh_n (GRU), dh0, dc0 (LSTM))."""
    # Gradients of unused outputs arrive as None under some autograd paths: zeros then.
    dout = dout.contiguous() if dout is not None else torch.zeros_like(out)
    zeros = torch.zeros(h0.shape, dtype=h0.dtype, device=h0.device)  # dense, whatever h0's layout
    dh_t = dh_t.contiguous() if dh_t is not None else zeros
    dc_arg = None
    if cell.has_cell_state:
        dc_arg = dc_t.contiguous() if dc_t is not None else zeros
    result = _C.rnn_backward(cell.kernel_id, reverse, tf32, dout, dh_t, dc_arg, w_hh.contiguous(),
                             saved, lengths)
    LAUNCHES["backward"] += 1
    return result


class CudaLayer(torch.autograd.Function):
    """(cell name, reverse, int32 lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (out, h_T[, c_T])."""

    @staticmethod
    def forward(ctx, cell_name: str, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell = CELLS[cell_name]
        ctx.tf32 = uses_tf32(x.dtype)  # decided once: the backward rounds as the forward did
        out, h_t, c_t, saved = forward_pass(cell, reverse, ctx.tf32, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        save_inputs(ctx, cell_name, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, out, saved)
        return (out, h_t, c_t) if cell.has_cell_state else (out, h_t)

    @staticmethod
    def backward(ctx, dout: Tensor, dh_t: Tensor, dc_t: Optional[Tensor] = None):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            return differentiable_backward(ctx, (dout, dh_t, dc_t))
        (x, h0, _, w_ih, w_hh, _, _), lengths, (out, saved) = saved_inputs(ctx)
        cell = CELLS[ctx.cell_name]
        dgx, dghn, dh0, dc0 = backward_pass(cell, ctx.reverse, ctx.tf32, dout, dh_t, dc_t, h0, w_hh, lengths, out, saved)
        return backward_outputs(ctx, not cell.sums_preactivations, cell.has_cell_state, dgx, dghn, dh0, dc0, x,
                                w_ih, out, h0, lengths)


def cuda_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """Backend entry point, signature of :func:`fastrnn.reference.reference_layer`."""
    return run_layer(CudaLayer, "CUDA", cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                     weight_hr, lengths, reverse)


# The training form (fastrnn/ops.py): TF32 is read from torch's flag in the forward and again in
# the backward (the Function decides once; a flag flipped between the two is the caller's doing).


def _forward_saving(cell, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    return forward_pass(cell, reverse, uses_tf32(x.dtype), lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def _backward_from_saved(cell, reverse, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved):
    return backward_pass(cell, reverse, uses_tf32(x.dtype), dout, dh_t, dc_t, h0, w_hh, lengths, out, saved)


# The training form of compiled training (fastrnn/ops.py): the kernels called directly.
TRAINING = TrainingForm(_forward_saving, _backward_from_saved)
