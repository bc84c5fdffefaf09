"""Reference backend: one layer, one direction, whole sequence, in plain differentiable PyTorch.

This is the truth every kernel backend is tested against, and the CPU path. It is written from
the cell equations in :mod:`fastrnn.cells` and is efficient enough to be the CPU default:

1. the input projection of all T steps is one GEMM: ``gx = x @ W_ih^T + b``;
2. each step is one ``mm`` with ``W_hh^T`` plus the cell's pointwise update.

Autograd differentiates it, so backward works in eval mode, double backward works, and any
number of steps works (there is no 65,535-step limit).

Variable lengths (design.md §4): step ``t`` of sequence ``b`` is active when ``t < lengths[b]``.
An inactive step leaves the state unchanged and writes a zero output. Running the reverse
direction from ``t = T-1`` down to 0 under the same rule starts every sequence at its own last
element, so no per-sequence flipping is needed.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import Backend, register_backend
from .cells import Cell


_UNBIND_CHUNK = 256  # steps per unbind node (see reference_layer)


def reference_layer(
    cell: Cell,
    x: Tensor,
    h0: Tensor,
    c0: Optional[Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor],
    bias_hh: Optional[Tensor],
    weight_hr: Optional[Tensor],
    lengths: Optional[Tensor],
    reverse: bool,
):
    """Run ``cell`` over ``x`` of shape (T, B, I). Returns (out (T, B, H_out), h_T, c_T or None)."""
    # Cells that only need gx + gh get b_hh folded into the big input GEMM; the GRU keeps b_hh in
    # the recurrent product because its reset gate multiplies W_hn h + b_hn.
    input_bias, recurrent_bias = bias_ih, bias_hh
    if cell.sums_preactivations and bias_hh is not None:
        input_bias, recurrent_bias = bias_ih + bias_hh, None
    # All steps' input projections in one GEMM. unbind (not gx[t]) so that backward gathers the
    # per-step gradients with one stack instead of one zero-filled (T, B, G*H) tensor per step;
    # unbind per chunk of steps, because autograd's cost per gradient arriving at one unbind
    # node grows with its number of outputs (backward time quadratic in T for long sequences).
    gx = [step for chunk in F.linear(x, weight_ih, input_bias).split(_UNBIND_CHUNK) for step in chunk.unbind(0)]

    seq_len = x.shape[0]
    active = None
    if lengths is not None:
        steps = torch.arange(seq_len, device=lengths.device)
        active = (steps[:, None] < lengths[None, :]).unsqueeze(-1).to(x.device).unbind(0)  # T x (B, 1)

    h, c = h0, c0
    weight_hh_t = weight_hh.t()
    # Appended in processing order and flipped at the end: TorchDynamo (torch 2.11) breaks the
    # graph on list item assignment (outputs[t] = ...), not on append.
    outputs = []
    for t in range(seq_len - 1, -1, -1) if reverse else range(seq_len):
        if cell.sums_preactivations:  # gx + h W_hh^T in one addmm
            h_new, c_new = cell.update(torch.addmm(gx[t], h, weight_hh_t), None, h, c)
        else:
            h_new, c_new = cell.update(gx[t], F.linear(h, weight_hh, recurrent_bias), h, c)
        if weight_hr is not None:
            h_new = F.linear(h_new, weight_hr)
        if active is None:
            h, c = h_new, c_new
            outputs.append(h_new)
        else:
            keep = active[t]
            h = torch.where(keep, h_new, h)
            if c is not None:
                c = torch.where(keep, c_new, c)
            outputs.append(torch.where(keep, h_new, torch.zeros_like(h_new)))
    if seq_len == 0:
        out = x.new_zeros((0, x.shape[1], h0.shape[-1]))
    else:
        out = torch.stack(outputs[::-1] if reverse else outputs)
    return out, h, c


register_backend(Backend(name="reference", priority=0, run_layer=reference_layer))
