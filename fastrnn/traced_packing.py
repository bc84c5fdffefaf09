"""PackedSequence <-> padded batch for tracers: the conversions of :mod:`fastrnn.packing` without a
data-dependent shape or a ``.item()`` where the layout allows it.

:mod:`fastrnn.packing` (the eager path) reads the batch size as ``int(batch_sizes[0])`` and
gathers with boolean masks, whose result sizes depend on tensor values: graph breaks under
torch.compile. Here every size is a shape:

* T is ``len(batch_sizes)``; N (packed rows) is ``data.shape[0]``;
* B is ``sorted_indices.shape[0]`` when the PackedSequence has sorted_indices (built with
  ``enforce_sorted=False``, or by fastrnn itself). Without them (``enforce_sorted=True``) B is
  ``batch_sizes[0]``, a value: it comes from :func:`packed_batch_size`, an operator whose output
  size the tracer treats as unknown-but-fixed (an unbacked size) instead of a graph break;
* packed row ``j`` belongs to step ``t = searchsorted(cumsum(batch_sizes), j, right=True)`` and
  sorted sequence ``k = j - (cumsum(batch_sizes)[t] - batch_sizes[t])``, i.e. padded row
  ``t * B + k``: index_copy / index_select with that index replace the mask scatter / gather.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .packing import caller_order


@torch.library.custom_op("fastrnn::packed_batch_size", mutates_args=())
def packed_batch_size(batch_sizes: Tensor) -> Tensor:
    """``arange(batch_sizes[0])``: a tensor whose length is the batch size of a PackedSequence."""
    return torch.arange(int(batch_sizes[0]) if batch_sizes.numel() else 0)


@packed_batch_size.register_fake
def _packed_batch_size_fake(batch_sizes):
    batch = torch.library.get_ctx().new_dynamic_size()
    return batch_sizes.new_empty((batch,), dtype=torch.int64)


@torch.library.custom_op("fastrnn::packed_batch_of_state", mutates_args=())
def packed_batch_of_state(batch_sizes: Tensor, state: Tensor) -> Tensor:
    """``arange(B)`` with B the batch of a given initial state (L*D, B, H), checked to be the
    PackedSequence's ``batch_sizes[0]``: a size the tracer knows from the state's shape."""
    batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
    if state.dim() != 3 or state.shape[1] != batch:
        raise RuntimeError(f"the initial state's batch size must be the PackedSequence's batch size {batch}, "
                           f"got a state of shape {tuple(state.shape)}")
    return torch.arange(batch)


@packed_batch_of_state.register_fake
def _packed_batch_of_state_fake(batch_sizes, state):
    return batch_sizes.new_empty((state.shape[1],), dtype=torch.int64)


def _batch(packed: PackedSequence, state: Optional[Tensor]) -> Tensor:
    """arange(B) on the CPU (where batch_sizes lives). Without sorted_indices, B is a value of
    ``batch_sizes``; a given state's batch dimension names it as a size the tracer already has
    (an unbacked size equated with a dynamic dimension would be assumed >= 2 and fail at B = 1)."""
    if packed.sorted_indices is not None:
        return torch.arange(packed.sorted_indices.shape[0])
    if state is not None:
        return packed_batch_of_state(packed.batch_sizes, state)
    return packed_batch_size(packed.batch_sizes)


def _padded_rows(batch_sizes: Tensor, num_rows: int, batch, device) -> Tensor:
    """Row ``t * batch + k`` of the (T * B, *) padded batch that each packed row fills, (N,)."""
    batch_sizes = batch_sizes.to(device)
    ends = batch_sizes.cumsum(0)
    rows = torch.arange(num_rows, device=device)
    step = torch.searchsorted(ends, rows, right=True)
    return step * batch + rows - (ends - batch_sizes).index_select(0, step)


def packed_to_padded(packed: PackedSequence, state: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """As :func:`fastrnn.packing.packed_to_padded`; ``state``: a given (L*D, B, H) initial state."""
    data, batch_sizes = packed.data, packed.batch_sizes
    sequences = _batch(packed, state)
    seq_len, batch = batch_sizes.shape[0], sequences.shape[0]
    rows = _padded_rows(batch_sizes, data.shape[0], batch, data.device)
    padded = data.new_zeros((seq_len * batch,) + data.shape[1:]).index_copy(0, rows, data)
    padded = padded.view((seq_len, batch) + data.shape[1:])
    lengths = (batch_sizes[:, None] > sequences[None, :]).sum(0).to(data.device)
    return caller_order(padded, lengths, packed)


def padded_to_packed(out: Tensor, like: PackedSequence) -> PackedSequence:
    """As :func:`fastrnn.packing.padded_to_packed`."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices.to(out.device))
    rows = _padded_rows(like.batch_sizes, like.data.shape[0], out.shape[1], out.device)
    data = out.reshape((-1,) + out.shape[2:]).index_select(0, rows)
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
