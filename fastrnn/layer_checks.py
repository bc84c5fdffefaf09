"""Argument checks of one layer-direction, before any backend sees the tensors.

Two entry points reach the backends with tensors nobody else has checked:

- :func:`fastrnn.functional.rnn_layer` (users' own calls): :func:`check_layer_args`;
- the operator ``torch.ops.fastrnn.rnn_layer`` (any exported program or direct call can run
  it, with any arguments its schema admits): :func:`check_op_args`, in the operator's real
  implementation, so the check runs whoever calls it.

The backends trust what passes here: torch's CPU kernels (oneDNN) and fastrnn's kernels read
the weights with the sizes they are told, so a weight smaller than its layer's sizes would be
read past its end. Shapes follow from three sizes: ``x`` is (T, B, I); ``weight_hh`` is
(G*H, H_out) with G the cell's gate count, H = rows / G and H_out = ``weight_hr``'s rows (the
projection) or H. Everything else must match them exactly:

    weight_ih (G*H, I)   weight_hh (G*H, H_out)   bias_ih, bias_hh (G*H,) both or neither
    weight_hr (H_out, H) LSTM only                h0 (B, H_out)   c0 (B, H) LSTM only
    lengths (B,) integer, every value in 0..T, on the CPU or x's device

All floating-point tensors share x's floating dtype (except under autocast in the functional
path, which casts them itself) and x's device (so ``meta`` never mixes with real memory).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import backends
from .cells import Cell, get_cell


def check_layer_args(cell: Cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                     *, lengths_in_range: bool = False, exact_dtype: bool = False) -> None:
    """Raise ValueError / RuntimeError / TypeError saying what was expected and what was given.

    ``lengths_in_range=True`` skips reading the lengths' values (a caller that built them, such
    as a module from its PackedSequence's checked batch sizes): on a GPU that read is a sync.
    ``exact_dtype`` refuses mixed dtypes even under autocast (the operator, which never sees
    autocast's casts).
    """
    for name, tensor in (("x", x), ("weight_hh", weight_hh)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(tensor).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must be 3-D (T, B, input_size), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if weight_hh.dim() != 2:
        raise RuntimeError(f"weight_hh must be 2-D ({cell.num_gates} * hidden_size, hidden), got shape "
                           f"{tuple(weight_hh.shape)}")
    seq_len, batch, input_size = x.shape
    gate_rows, hidden = weight_hh.shape[0], weight_hh.shape[0] // cell.num_gates
    if gate_rows % cell.num_gates != 0:
        raise ValueError(
            f"weight_hh must have {cell.num_gates} * hidden_size rows for {cell.name}, "
            f"got shape {tuple(weight_hh.shape)}"
        )
    if weight_hr is not None and not cell.has_cell_state:
        raise ValueError(f"weight_hr (projection) is only supported for LSTM, not {cell.name}")
    if weight_hr is not None and weight_hr.dim() != 2:
        raise RuntimeError(f"weight_hr must be 2-D (proj_size, hidden_size), got shape {tuple(weight_hr.shape)}")
    h_out = weight_hr.shape[0] if weight_hr is not None else hidden
    expected = {
        "weight_ih": (gate_rows, input_size),
        "weight_hh": (gate_rows, h_out),
        "h0": (batch, h_out),
    }
    given = {"weight_ih": weight_ih, "weight_hh": weight_hh, "h0": h0}
    if bias_ih is not None or bias_hh is not None:  # both or neither
        expected.update(bias_ih=(gate_rows,), bias_hh=(gate_rows,))
        given.update(bias_ih=bias_ih, bias_hh=bias_hh)
    if weight_hr is not None:
        expected["weight_hr"] = (h_out, hidden)
        given["weight_hr"] = weight_hr
    if cell.has_cell_state:
        if c0 is None:
            raise ValueError("LSTM layer needs c0 of shape (B, hidden_size), got None")
        expected["c0"] = (batch, hidden)
        given["c0"] = c0
    elif c0 is not None:
        raise ValueError(f"{cell.name} has no cell state, but c0 was given")
    mixed_ok = not exact_dtype and torch.is_autocast_enabled(x.device.type)
    for name, tensor in given.items():
        if tensor is None:
            raise ValueError(f"{name} is None; expected a tensor of shape {expected[name]}")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a Tensor of shape {expected[name]}, got {type(tensor).__name__}")
        if tuple(tensor.shape) != expected[name]:
            raise RuntimeError(f"{name} must have shape {expected[name]}, got {tuple(tensor.shape)}")
        if tensor.dtype != x.dtype and not (mixed_ok and tensor.is_floating_point()):
            raise RuntimeError(f"{name} has dtype {tensor.dtype} but x has dtype {x.dtype}")
        if tensor.device != x.device:
            raise RuntimeError(f"{name} is on device {tensor.device} but x is on {x.device}")
    if lengths is not None:
        check_lengths(lengths, seq_len, batch, x.device, values=not lengths_in_range)


def check_lengths(lengths, seq_len: int, batch: int, device: torch.device, *, values: bool = True) -> None:
    """lengths: an integer tensor of shape (B,) on the CPU or ``device``; with ``values``, every
    length in 0..T (one host read of its min and max: a sync when it lives on a GPU)."""
    if not isinstance(lengths, Tensor):
        raise TypeError(f"lengths must be a Tensor of shape ({batch},), got {type(lengths).__name__}")
    if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.dtype.is_complex \
            or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be an integer tensor of shape ({batch},), "
            f"got {lengths.dtype} of shape {tuple(lengths.shape)}"
        )
    if lengths.device != device and lengths.device.type != "cpu":
        raise RuntimeError(f"lengths must be on the CPU or on x's device {device}, got {lengths.device}")
    if not values or batch == 0 or lengths.device.type == "meta":
        return
    low, high = torch.stack(torch.aminmax(lengths)).tolist()  # one read from the device
    if low < 0 or high > seq_len:
        raise ValueError(
            f"lengths must lie in 0..{seq_len} (the sequence length T of x), got values from {low} to {high}"
        )


def check_op_args(cell: str, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                  backend, *, values: bool = True) -> Cell:
    """The operator's arguments (``fastrnn::rnn_layer`` and its backward); -> the Cell.

    ``values=False`` for the fake implementation: shapes, dtypes and devices only (a tracer's
    tensors have no values).
    """
    if not isinstance(cell, str):
        raise TypeError(f"cell must be a str, got {type(cell).__name__}")
    resolved = get_cell(cell)
    backends.check_backend_name(backend)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    check_layer_args(resolved, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                     lengths_in_range=not values, exact_dtype=True)
    return resolved
