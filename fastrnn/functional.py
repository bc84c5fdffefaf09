"""The functional API: one layer, one direction, a whole padded sequence.

``rnn_layer`` checks its arguments and runs the layer on the backend selected for it
(:func:`fastrnn.backends.run_layer`: one decision per call), or, while a tracer records it, as
the operator of :mod:`fastrnn.ops`; ``rnn_tanh_layer``, ``rnn_relu_layer``, ``lstm_layer`` and
``gru_layer`` are the per-cell spellings of it. (Modules do not come through here: they check
their own arguments as torch.nn does and run :mod:`fastrnn.layer_stack` on the backend they
chose; every backend's ``run_layer`` is this seam.)

Shapes (time-major, like torch.nn with ``batch_first=False``):

    x        (T, B, I)
    h0       (B, H_out)      H_out = proj_size if proj_size > 0 else H
    c0       (B, H)          LSTM only; h0 and c0 are both given or both None (zeros)
    lengths  (B,) int        optional; step t of sequence b runs only when t < lengths[b].
                             Past its length a sequence keeps its state and outputs zeros.
    returns  out (T, B, H_out), h_T (B, H_out), c_T (B, H) or None

With ``reverse=True`` the layer runs from the last step of each sequence (``lengths[b] - 1``)
back to step 0, as the backward direction of a bidirectional layer does.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import backends, ops
from .autocast import run_in_autocast_dtype
from .cells import GRU, LSTM, RNN_RELU, RNN_TANH, Cell
from .tracing import tracing


def _check_layer_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths):
    if x.dim() != 3:
        raise ValueError(f"x must be 3-D (T, B, input_size), got shape {tuple(x.shape)}")
    seq_len, batch, input_size = x.shape
    gate_rows, hidden = weight_hh.shape[0], weight_hh.shape[0] // cell.num_gates
    h_out = weight_hr.shape[0] if weight_hr is not None else hidden
    expected = {
        "weight_ih": (cell.num_gates * hidden, input_size),
        "weight_hh": (cell.num_gates * hidden, h_out),
        "h0": (batch, h_out),
    }
    given = {"weight_ih": weight_ih, "weight_hh": weight_hh, "h0": h0}
    if bias_ih is not None or bias_hh is not None:
        expected.update(bias_ih=(gate_rows,), bias_hh=(gate_rows,))
        given.update(bias_ih=bias_ih, bias_hh=bias_hh)
    if weight_hr is not None:
        if not cell.has_cell_state:
            raise ValueError(f"weight_hr (projection) is only supported for LSTM, not {cell.name}")
        expected["weight_hr"] = (h_out, hidden)
        given["weight_hr"] = weight_hr
    if cell.has_cell_state:
        if c0 is None:
            raise ValueError("LSTM layer needs c0 of shape (B, hidden_size), got None")
        expected["c0"] = (batch, hidden)
        given["c0"] = c0
    elif c0 is not None:
        raise ValueError(f"{cell.name} has no cell state, but c0 was given")
    if gate_rows % cell.num_gates != 0:
        raise ValueError(
            f"weight_hh must have {cell.num_gates} * hidden_size rows for {cell.name}, "
            f"got shape {tuple(weight_hh.shape)}"
        )
    for name, tensor in given.items():
        if tensor is None:
            raise ValueError(f"{name} is None; expected a tensor of shape {expected[name]}")
        if tuple(tensor.shape) != expected[name]:
            raise RuntimeError(f"{name} must have shape {expected[name]}, got {tuple(tensor.shape)}")
        if tensor.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise RuntimeError(f"{name} has dtype {tensor.dtype} but x has dtype {x.dtype}")
        if tensor.device != x.device:
            raise RuntimeError(f"{name} is on device {tensor.device} but x is on {x.device}")
    if lengths is not None:
        if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(
                f"lengths must be an integer tensor of shape ({batch},), "
                f"got {lengths.dtype} of shape {tuple(lengths.shape)}"
            )


def rnn_layer(
    cell: Cell,
    x: Tensor,
    h0: Optional[Tensor],
    c0: Optional[Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    weight_hr: Optional[Tensor] = None,
    *,
    lengths: Optional[Tensor] = None,
    reverse: bool = False,
    backend: str = "auto",
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Run ``cell`` over the sequence ``x`` on the selected backend (see module docstring)."""
    # Under autocast the whole layer runs in the autocast dtype (fastrnn/autocast.py).
    return run_in_autocast_dtype(_checked_layer, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                                 weight_hr, lengths, reverse, backend)


def _checked_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    hidden = weight_hh.shape[0] // cell.num_gates
    h_out = weight_hr.shape[0] if weight_hr is not None else hidden
    if h0 is None and c0 is None and x.dim() == 3:  # zero initial state; an LSTM needs both or neither
        h0 = x.new_zeros((x.shape[1], h_out))
        c0 = x.new_zeros((x.shape[1], hidden)) if cell.has_cell_state else None
    _check_layer_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths)
    run = ops.rnn_layer if tracing() else backends.run_layer  # a tracer records one operator
    return run(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend)


def rnn_tanh_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, **kwargs):
    """Elman layer, ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``. Returns (out, h_T)."""
    out, h, _ = rnn_layer(RNN_TANH, x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, **kwargs)
    return out, h


def rnn_relu_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, **kwargs):
    """Elman layer, ``h' = relu(W_ih x + b_ih + W_hh h + b_hh)``. Returns (out, h_T)."""
    out, h, _ = rnn_layer(RNN_RELU, x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, **kwargs)
    return out, h


def lstm_layer(x, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, **kwargs):
    """LSTM layer (gates i, f, g, o). ``hx`` is (h0, c0) or None. Returns (out, (h_T, c_T))."""
    h0, c0 = (None, None) if hx is None else hx
    out, h, c = rnn_layer(LSTM, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, **kwargs)
    return out, (h, c)


def gru_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, **kwargs):
    """GRU layer (gates r, z, n; r multiplies W_hn h + b_hn). Returns (out, h_T)."""
    out, h, _ = rnn_layer(GRU, x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, **kwargs)
    return out, h
