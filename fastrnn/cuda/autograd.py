"""The autograd Function of the CUDA backend: torch GEMMs around the two persistent kernels.

Same structure as :mod:`fastrnn.triton.autograd`:

Forward (one layer-direction):
    gx  = x @ W_ih^T + b          one GEMM over all T steps (torch); b = b_ih + b_hh, except the
                                  GRU's n block which gets b_in only (b_hn goes to the kernel,
                                  because r multiplies W_hn h + b_hn)
    out, h_T, c_T, saved = _C.rnn_forward(cell, reverse, gx, W_hh, b_hn, h0, c0, lengths)

Backward:
    dgx, dgh_n, dh0, dc0 = _C.rnn_backward(cell, reverse, dout, dh_T, dc_T, W_hh, saved, lengths)
    dgh   = dgx, except the GRU's n block: dgh_n = da_n * r
    dx    = dgx @ W_ih,  dW_ih = dgx^T @ x,  dW_hh = dgh^T @ h_prev,
    db_ih = sum_{t,b} dgx,  db_hh = sum_{t,b} dgh

The forward saves fp32 activations (kernels/cell_math.cuh: 1 value per unit and step for Elman,
5 for LSTM and GRU). The backward is @once_differentiable (use backend="reference" for double
backward).
"""

from __future__ import annotations

import collections
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from fastrnn import _C

from .backend import CELL_IDS

LSTM, GRU = CELL_IDS["lstm"], CELL_IDS["gru"]

# How many times each kernel was launched in this process ("forward", "backward"): the tests
# read it to prove the CUDA kernels (not a fallback) ran.
LAUNCHES: collections.Counter = collections.Counter()


def _prev_state(out: Tensor, h0: Tensor, lengths: Tensor, reverse: bool) -> Tensor:
    """(T, B, H): the state each step started from (only used where the step is active)."""
    if not reverse:
        return torch.cat([h0.unsqueeze(0), out[:-1]])
    seq_len = out.shape[0]
    shifted = torch.cat([out[1:], h0.unsqueeze(0)])
    # The reverse direction's first active step (t = len-1) starts from h0; out[len] is 0 there.
    has_prev = (torch.arange(1, seq_len + 1, device=out.device)[:, None] < lengths[None, :]).unsqueeze(-1)
    return torch.where(has_prev, shifted, h0.unsqueeze(0))


class CudaLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell_name: str, reverse: bool, lengths: Tensor, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell = CELL_IDS[cell_name]
        hidden = w_hh.shape[1]
        num_gates = w_hh.shape[0] // hidden
        bias = None
        b_hn = None
        if b_ih is not None:
            if cell == GRU:
                bias = b_ih + torch.cat([b_hh[: 2 * hidden], b_hh.new_zeros(hidden)])
                b_hn = b_hh[2 * hidden:].contiguous()
            else:
                bias = b_ih + b_hh
        if cell == GRU and b_hn is None:
            b_hn = w_hh.new_zeros(hidden)
        gx = F.linear(x, w_ih, bias).contiguous()
        w_hh_c = w_hh.contiguous()
        h0 = h0.contiguous()
        c0_arg = c0.contiguous() if cell == LSTM else None
        out, h_t, c_t, saved = _C.rnn_forward(cell, reverse, gx, w_hh_c, b_hn, h0, c0_arg, lengths)
        LAUNCHES["forward"] += 1
        ctx.cell, ctx.reverse, ctx.num_gates = cell, reverse, num_gates
        ctx.has_bias = b_ih is not None
        ctx.save_for_backward(x, h0, w_ih, w_hh_c, out, saved, lengths)
        if cell == LSTM:
            return out, h_t, c_t
        return out, h_t

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, dh_t: Tensor, dc_t: Optional[Tensor] = None):
        x, h0, w_ih, w_hh, out, saved, lengths = ctx.saved_tensors
        cell, num_gates = ctx.cell, ctx.num_gates
        seq_len, batch, input_size = x.shape
        hidden = w_hh.shape[1]
        # Gradients of unused outputs arrive as None under some autograd paths: zeros then.
        dout = dout.contiguous() if dout is not None else torch.zeros_like(out)
        dh_t = dh_t.contiguous() if dh_t is not None else torch.zeros_like(h0)
        dc_arg = None
        if cell == LSTM:
            dc_arg = dc_t.contiguous() if dc_t is not None else torch.zeros_like(h0)
        dgx, dghn, dh0, dc0 = _C.rnn_backward(cell, ctx.reverse, dout, dh_t, dc_arg, w_hh, saved, lengths)
        LAUNCHES["backward"] += 1

        need = ctx.needs_input_grad  # (cell, reverse, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        dgx2 = dgx.view(seq_len * batch, num_gates * hidden)
        dgh2 = dgx2
        if cell == GRU:
            dgh2 = torch.cat([dgx[..., : 2 * hidden], dghn], dim=-1).view(seq_len * batch, -1)
        dx = (dgx2 @ w_ih).view(seq_len, batch, input_size) if need[3] else None
        dw_ih = dgx2.t() @ x.reshape(seq_len * batch, input_size) if need[6] else None
        dw_hh = None
        if need[7]:
            h_prev = _prev_state(out, h0, lengths, ctx.reverse).reshape(seq_len * batch, hidden)
            dw_hh = dgh2.t() @ h_prev
        db_ih = dgx2.sum(0) if ctx.has_bias and need[8] else None
        db_hh = dgh2.sum(0) if ctx.has_bias and need[9] else None
        return (None, None, None, dx, dh0 if need[4] else None,
                dc0 if cell == LSTM and need[5] else None, dw_ih, dw_hh, db_ih, db_hh)


def cuda_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """Backend entry point, signature of :func:`fastrnn.reference.reference_layer`."""
    if weight_hr is not None:  # unsupported() rejects this before we get here
        raise NotImplementedError("the CUDA backend does not implement proj_size > 0")
    seq_len, batch, _ = x.shape
    # Under autocast the parameters may be in another dtype than x: run in x's dtype.
    weight_ih, weight_hh = weight_ih.to(x.dtype), weight_hh.to(x.dtype)
    if bias_ih is not None:
        bias_ih, bias_hh = bias_ih.to(x.dtype), bias_hh.to(x.dtype)
    h0 = h0.to(x.dtype)
    c0 = c0.to(x.dtype) if c0 is not None else None
    if seq_len == 0 or batch == 0:
        out = x.new_zeros((seq_len, batch, weight_hh.shape[1]))
        return out, h0, c0
    if lengths is None:
        lengths = torch.full((batch,), seq_len, dtype=torch.int32, device=x.device)
    else:
        lengths = lengths.to(device=x.device, dtype=torch.int32).clamp(0, seq_len).contiguous()
    res = CudaLayer.apply(cell.name, reverse, lengths, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    if cell.has_cell_state:
        return res
    return res[0], res[1], None
