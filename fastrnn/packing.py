"""PackedSequence <-> time-major padded batch with per-sequence lengths.

A PackedSequence stores, for each step t, the rows of the first ``batch_sizes[t]`` sequences in
*sorted* order (longest first); ``sorted_indices[k]`` is the original batch index of sorted row k.
fastrnn's layers run on a padded (T, B, *) batch in the caller's original order with a lengths
vector, so hidden states need no permutation, and the packed output is rebuilt with the input's
own ``batch_sizes`` / ``sorted_indices`` / ``unsorted_indices``, exactly as torch.nn returns it.
Both conversions are differentiable (boolean-mask gather and scatter).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import traced_packing
from .ops import use_op


def _valid_mask(packed: PackedSequence, device) -> Tensor:
    """(T, B) bool: entry [t, k] is True when sorted sequence k has a step t."""
    batch_sizes = packed.batch_sizes.to(device)
    batch = int(packed.batch_sizes[0]) if len(packed.batch_sizes) else 0
    return torch.arange(batch, device=device)[None, :] < batch_sizes[:, None]


def packed_to_padded(packed: PackedSequence) -> Tuple[Tensor, Tensor]:
    """-> (x (T, B, F) in original batch order, zeros past each end; lengths (B,) int64)."""
    if use_op():  # a tracer needs sizes that are shapes, not values (fastrnn/traced_packing.py)
        return traced_packing.packed_to_padded(packed)
    data = packed.data
    mask = _valid_mask(packed, data.device)
    padded = data.new_zeros(mask.shape + data.shape[1:])
    padded = padded.masked_scatter(mask.unsqueeze(-1), data) if data.numel() else padded
    lengths = mask.sum(0)
    if packed.unsorted_indices is not None:
        unsorted = packed.unsorted_indices.to(data.device)
        padded = padded.index_select(1, unsorted)
        lengths = lengths.index_select(0, unsorted)
    return padded, lengths


def padded_to_packed(out: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``out`` (T, B, F, original batch order) with the layout of ``like``."""
    if use_op():
        return traced_packing.padded_to_packed(out, like)
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices.to(out.device))
    mask = _valid_mask(like, out.device)
    data = out[mask]  # row-major over (T, B): exactly the packed order
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
