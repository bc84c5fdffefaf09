"""PackedSequence <-> time-major padded batch with per-sequence lengths.

A PackedSequence stores, for each step t, the rows of the first ``batch_sizes[t]`` sequences in
*sorted* order (longest first); ``sorted_indices[k]`` is the original batch index of sorted row k.
fastrnn's layers run on a padded (T, B, *) batch in the caller's original order with a lengths
vector, so hidden states need no permutation, and the packed output is rebuilt with the input's
own ``batch_sizes`` / ``sorted_indices`` / ``unsorted_indices``, exactly as torch.nn returns it.
Both conversions are differentiable (boolean-mask gather and scatter).

A hand-built PackedSequence is checked first (:func:`check_packed`): ``batch_sizes`` must be what
the pack_* functions produce, or the layout above does not exist.

These are the eager conversions; while tracing, :mod:`fastrnn.layer_stack` uses the ones of
:mod:`fastrnn.traced_packing` (sizes from shapes) instead.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


def _show(sizes) -> str:
    return str(sizes) if len(sizes) <= 12 else f"[{', '.join(map(str, sizes[:12]))}, ...] ({len(sizes)} steps)"


def check_packed(packed: PackedSequence) -> None:
    """Raise for a PackedSequence no pack_* function produces, where torch.nn raises too (a
    RuntimeError; TypeError for a non-integer ``batch_sizes``): ``batch_sizes`` must be a
    non-empty 1-D integer tensor of positive, non-increasing counts summing to the rows of
    ``data``; ``sorted_indices`` / ``unsorted_indices``, when given, one entry per sequence.
    Under torch.compile only the dtype and shape of ``batch_sizes`` are checked."""
    batch_sizes = packed.batch_sizes
    if (not isinstance(batch_sizes, Tensor) or batch_sizes.dtype.is_floating_point
            or batch_sizes.dtype.is_complex or batch_sizes.dtype == torch.bool):
        what = batch_sizes.dtype if isinstance(batch_sizes, Tensor) else type(batch_sizes).__name__
        raise TypeError(f"PackedSequence.batch_sizes must be an integer tensor, got {what}")
    if batch_sizes.dim() != 1 or batch_sizes.numel() == 0:
        raise RuntimeError(
            "PackedSequence.batch_sizes must be a non-empty 1-D tensor (the number of sequences at "
            f"each time step), got shape {tuple(batch_sizes.shape)}"
        )
    if torch.compiler.is_compiling():
        # The value checks below read batch_sizes on the host: in a traced graph that is a
        # data-dependent guard (a graph break, or an error under fullgraph). Eager mode checks.
        return
    sizes = batch_sizes.tolist()
    if min(sizes) <= 0:
        raise RuntimeError(f"PackedSequence.batch_sizes must be positive, got {_show(sizes)}")
    if any(later > earlier for earlier, later in zip(sizes, sizes[1:])):
        raise RuntimeError(
            "PackedSequence.batch_sizes must be non-increasing (sequences sorted longest first), "
            f"got {_show(sizes)}"
        )
    rows = packed.data.shape[0] if packed.data.dim() else 0
    if sum(sizes) != rows:
        raise RuntimeError(
            f"PackedSequence.batch_sizes sum to {sum(sizes)}, but data has {rows} rows (one per "
            "sequence and step)"
        )
    for name in ("sorted_indices", "unsorted_indices"):
        indices = getattr(packed, name)
        if indices is not None and tuple(indices.shape) != (sizes[0],):
            raise RuntimeError(
                f"PackedSequence.{name} must have one entry per sequence ({sizes[0]}), got shape "
                f"{tuple(indices.shape)}"
            )


def _valid_mask(packed: PackedSequence, device) -> Tensor:
    """(T, B) bool: entry [t, k] is True when sorted sequence k has a step t."""
    batch_sizes = packed.batch_sizes.to(device)
    batch = int(packed.batch_sizes[0]) if len(packed.batch_sizes) else 0
    return torch.arange(batch, device=device)[None, :] < batch_sizes[:, None]


def packed_to_padded(packed: PackedSequence, state: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """-> (x (T, B, F) in original batch order, zeros past each end; lengths (B,) int64).
    ``packed`` has passed :func:`check_packed` (the modules check it before anything else).
    ``state`` is for the traced twin (traced_packing), which takes its batch size from it; the
    eager conversion reads the batch size from ``batch_sizes``."""
    data = packed.data
    mask = _valid_mask(packed, data.device)
    padded = data.new_zeros(mask.shape + data.shape[1:])
    padded = padded.masked_scatter(mask.unsqueeze(-1), data) if data.numel() else padded
    lengths = mask.sum(0)
    return caller_order(padded, lengths, packed)


def caller_order(padded: Tensor, lengths: Tensor, packed: PackedSequence) -> Tuple[Tensor, Tensor]:
    """(T, B, F) padded batch and (B,) lengths in sorted order -> the caller's batch order."""
    if packed.unsorted_indices is not None:
        unsorted = packed.unsorted_indices.to(padded.device)
        padded = padded.index_select(1, unsorted)
        lengths = lengths.index_select(0, unsorted)
    return padded, lengths


def padded_to_packed(out: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``out`` (T, B, F, original batch order) with the layout of ``like``."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices.to(out.device))
    mask = _valid_mask(like, out.device)
    data = out[mask]  # row-major over (T, B): exactly the packed order
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
