"""The generic layer stack: a whole RNN/LSTM/GRU module's forward over per-layer-direction calls.

Every backend's default ``run_module`` (:class:`fastrnn.backends.Backend`); a backend that runs
a whole stack its own way (``torch``: one ``torch._VF`` call) replaces it. Given a module whose
input the module has checked, it

1. makes the input a time-major padded batch (T, B, I) with per-sequence lengths when it is a
   PackedSequence (:mod:`fastrnn.packing`; :mod:`fastrnn.traced_packing` while tracing);
2. takes the initial state from ``hx`` (the module's own checks, as torch.nn's), zeros without;
3. runs layer ``l``, direction ``d`` as ``run_layer`` on weights ``*_l{l}[_reverse]``, the input
   of layer ``l + 1`` being the outputs of both directions of layer ``l`` concatenated, with
   dropout between layers in training mode (where torch.nn applies it: on the packed rows for
   packed input, see :func:`layer_dropout`);
4. under autocast, each layer-direction runs wholly in the autocast dtype (:mod:`fastrnn.autocast`);
5. returns output and final states shaped as torch.nn returns them.

``run_layer`` has the signature of :func:`fastrnn.reference.reference_layer`: the chosen
backend's own, so the whole stack runs on the one backend the module's forward decided on (or,
while tracing, the operator of :mod:`fastrnn.ops` per layer-direction).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import packing, traced_packing
from .autocast import run_in_autocast_dtype
from .tracing import tracing


def run_module(module, input, hx, batched: bool, run_layer: Callable):
    """``module``'s forward on ``input`` (checked; ``batched`` says whether it has a batch
    dimension) and ``hx`` with ``run_layer`` per layer-direction; returns (output, h_n) or
    (output, (h_n, c_n)) as torch.nn does."""
    conversions = traced_packing if tracing() else packing
    x, lengths, packed = time_major_input(module, input, batched, hx, conversions)
    h0, c0 = module._initial_state(x.shape[1], x, hx, packed is not None, batched)
    out, h_n, c_n = run_layers(module, x, h0, c0, lengths, packed, run_layer, conversions)
    if packed is not None:
        output = conversions.padded_to_packed(out, packed)
    elif not batched:
        output = out.squeeze(1)
    else:
        output = out.transpose(0, 1) if module.batch_first else out
    if not batched:
        h_n = h_n.squeeze(1)
        c_n = c_n.squeeze(1) if c_n is not None else None
    return output, ((h_n, c_n) if module.cell.has_cell_state else h_n)


def time_major_input(module, input, batched: bool, hx=None, conversions=packing):
    """-> (x (T, B, I), lengths or None, PackedSequence or None). A given 3-D h_0 tells a tracer
    the batch size of a PackedSequence (traced_packing)."""
    if isinstance(input, PackedSequence):
        state = hx[0] if isinstance(hx, (tuple, list)) and hx else hx  # h_0: its batch is B
        x, lengths = conversions.packed_to_padded(input, state if isinstance(state, Tensor) and state.dim() == 3 else None)
        return x, lengths, input
    x = input if batched else input.unsqueeze(0 if module.batch_first else 1)
    if module.batch_first:
        x = x.transpose(0, 1)
    if x.shape[0] == 0:  # torch.nn's words; a PackedSequence always has a step (check_packed)
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    return x, None, None


def run_layers(module, x: Tensor, h0: Tensor, c0: Optional[Tensor], lengths: Optional[Tensor],
               packed: Optional[PackedSequence], run_layer: Callable, conversions=packing):
    """Layers x directions of ``module`` over x (T, B, I) -> (out (T, B, D*H_out), h_n, c_n)."""
    cell = module.cell
    directions = module.num_directions
    h_finals, c_finals = [], []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            weights = {name.split("_l")[0]: getattr(module, name) for name in module._all_weights[k]}
            out, h, c = run_in_autocast_dtype(
                run_layer, cell, x, h0[k], c0[k] if c0 is not None else None,
                weights["weight_ih"], weights["weight_hh"], weights.get("bias_ih"), weights.get("bias_hh"),
                weights.get("weight_hr"), lengths, direction == 1,
            )
            outputs.append(out)
            h_finals.append(h)
            c_finals.append(c)
        x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if module.dropout > 0 and module.training and layer < module.num_layers - 1:
            x = layer_dropout(x, module.dropout, packed, conversions)
    c_n = torch.stack(c_finals) if cell.has_cell_state else None
    return x, torch.stack(h_finals), c_n


def layer_dropout(x: Tensor, p: float, packed: Optional[PackedSequence], conversions=packing) -> Tensor:
    """Dropout between layers where torch.nn applies it: ``F.dropout(rows, p)`` on the packed rows
    (sum(batch_sizes), F) of a layer's output when the input was ``packed``, so the random draws
    (their number and order) are torch.nn's for the same seed on the CPU; on the padded
    (T, B, F) output otherwise. Returns the padded (T, B, F) input of the next layer (zeros
    past each sequence's end)."""
    if packed is None:
        return F.dropout(x, p, training=True)
    rows = conversions.padded_to_packed(x, packed).data
    dropped = PackedSequence(F.dropout(rows, p, training=True), packed.batch_sizes, packed.sorted_indices,
                             packed.unsorted_indices)
    return conversions.packed_to_padded(dropped)[0]
