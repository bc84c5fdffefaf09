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
from .layer_checks import check_layer_args
from .tracing import tracing


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
    """Run ``cell`` over the sequence ``x`` on the selected backend (see module docstring).

    Every argument is checked (:func:`fastrnn.layer_checks.check_layer_args`), lengths' values
    included (each in 0..T), before a backend runs.
    """
    # Under autocast the whole layer runs in the autocast dtype (fastrnn/autocast.py).
    return run_in_autocast_dtype(_checked_layer, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                                 weight_hr, lengths, reverse, backend)


def _checked_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    if h0 is None and c0 is None and isinstance(x, Tensor) and x.dim() == 3:
        # zero initial state (an LSTM needs both or neither), sized from the weights once they
        # are known to be matrices; check_layer_args checks the rest
        if not isinstance(weight_hh, Tensor) or weight_hh.dim() != 2:
            raise RuntimeError(f"weight_hh must be a 2-D tensor, got {_describe(weight_hh)}")
        if weight_hr is not None and (not isinstance(weight_hr, Tensor) or weight_hr.dim() != 2):
            raise RuntimeError(f"weight_hr must be a 2-D tensor, got {_describe(weight_hr)}")
        hidden = weight_hh.shape[0] // cell.num_gates
        h_out = weight_hr.shape[0] if weight_hr is not None else hidden
        h0 = x.new_zeros((x.shape[1], h_out))
        c0 = x.new_zeros((x.shape[1], hidden)) if cell.has_cell_state else None
    traced = tracing()
    # Traced lengths have no values; the operator checks them when it runs.
    check_layer_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                     lengths_in_range=traced)
    run = ops.rnn_layer if traced else backends.run_layer  # a tracer records one operator
    return run(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend)


def _describe(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


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
