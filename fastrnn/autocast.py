"""fastrnn's rule under ``torch.autocast``: a layer runs wholly in the autocast dtype.

torch.nn's recurrent layers do so under CUDA autocast: input, states and weights are cast once
at the layer boundary (differentiably, so fp32 master weights get fp32 gradients), the layer runs
with autocast off, and outputs and final states come out in the autocast dtype. fastrnn applies
the same rule on every device and backend, so every backend sees one dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would run a matmul on ``x`` in, or None when autocast is off for it."""
    if not x.is_floating_point() or x.dtype == torch.float64:  # autocast leaves float64 alone
        return None
    if not torch.is_autocast_enabled(x.device.type):
        return None
    return torch.get_autocast_dtype(x.device.type)


def cast(tensor: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """``tensor`` in ``dtype`` when autocast would cast it (floating point, not float64)."""
    if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.float64:
        return tensor
    return tensor.to(dtype)


def autocast_off(x: Tensor):
    """A context in which autocast is off for ``x``'s device type (the layer runs as cast)."""
    return torch.autocast(x.device.type, enabled=False)


def run_in_autocast_dtype(run_layer, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, *rest):
    """``run_layer(cell, x, h0, c0, weight_ih, ..., weight_hr, *rest)`` under fastrnn's rule:
    when autocast is on for ``x``, the tensors are cast to the autocast dtype and the layer runs
    with autocast off; otherwise it runs as given."""
    dtype = autocast_dtype(x)
    if dtype is None:
        return run_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, *rest)
    tensors = [cast(t, dtype) for t in (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)]
    with autocast_off(x):
        return run_layer(cell, *tensors, *rest)
