"""The functional seam: one layer, one direction, a whole padded sequence.

``rnn_layer`` is the single entry point every module goes through; ``rnn_tanh_layer``,
``rnn_relu_layer``, ``lstm_layer`` and ``gru_layer`` are the per-cell spellings of it.

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
from .backends import LayerProblem
from .cells import GRU, LSTM, RNN_RELU, RNN_TANH, Cell
from .layer_checks import check_layer_args


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
    return layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                 lengths=lengths, reverse=reverse, backend=backend)


def layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *, lengths=None,
          reverse=False, backend="auto", lengths_in_range=False):
    """:func:`rnn_layer` for fastrnn's modules: ``lengths_in_range=True`` when the lengths come
    from a checked PackedSequence, so their values are not read again (on a GPU, a sync)."""
    autocast_dtype = _autocast_dtype(x)
    if autocast_dtype is not None:
        # Under autocast the whole layer runs in the autocast dtype, as torch.nn's recurrent ops
        # do under CUDA autocast: cast x, the states and the weights once here (differentiably,
        # so fp32 master weights get fp32 grads) and run the backend with autocast off, so every
        # backend sees one dtype and returns outputs and states in it.
        x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = (
            _cast(t, autocast_dtype) for t in (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
        )
        with torch.autocast(x.device.type, enabled=False):
            return layer(
                cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                lengths=lengths, reverse=reverse, backend=backend, lengths_in_range=lengths_in_range,
            )
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
    traced = ops.use_op()
    # Traced lengths have no values; the operator checks them when it runs.
    check_layer_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                     lengths_in_range=lengths_in_range or traced)
    if traced:  # a tracer records one operator, which picks and runs the backend itself
        return ops.rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                             backend)
    problem = layer_problem(cell, x, weight_hh.shape[0] // cell.num_gates, weight_hr, bias_ih is not None,
                            lengths is not None)
    choice = backends.explain(problem, backend)
    return backends.get_backend(choice.backend).run_layer(
        cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse
    )


def _describe(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would run a matmul on ``x`` in, or None when autocast is off for it."""
    if not x.is_floating_point() or x.dtype == torch.float64:  # autocast leaves float64 alone
        return None
    if not torch.is_autocast_enabled(x.device.type):
        return None
    return torch.get_autocast_dtype(x.device.type)


def _cast(tensor: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    # Same eligibility as autocast's own casts: floating point, not float64.
    if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.float64:
        return tensor
    return tensor.to(dtype)


def layer_problem(cell, x, hidden_size, weight_hr, has_bias, has_lengths) -> LayerProblem:
    return LayerProblem(
        cell=cell,
        device=x.device,
        dtype=x.dtype,
        input_size=x.shape[2],
        hidden_size=hidden_size,
        proj_size=0 if weight_hr is None else weight_hr.shape[0],
        batch_size=x.shape[1],
        seq_len=x.shape[0],
        has_bias=has_bias,
        has_lengths=has_lengths,
    )


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
