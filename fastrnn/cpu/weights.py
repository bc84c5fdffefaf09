"""W_hh in the layouts the CPU kernels read (csrc/cpu/kernel_args.h), cached per weight version.

With W floats per vector and P = ceil(H / W) panels of W hidden units (units past H zero):

    forward   (P, H, G, W): panel p, row k, gate g = W_hh[g*H + p*W + i, k] for i < W
              (W_hh^T, with all G gates of a unit in the same panel: the cell update runs on the
              product while it is still in registers)
    backward  (P, G*H, W):  panel p, row j = W_hh[j, p*W + i]   (W_hh, for dh = dgh W_hh)

Packing reads all of W_hh, so it is done once per weight and kept: the cache holds a weak
reference to the weight and its version counter (bumped by every in-place change, an optimizer
step included), so a changed or freed weight is never served a stale packing (see :func:`packed`).
"""

from __future__ import annotations

import weakref
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_CACHE: Dict[Tuple[int, int, str, int], tuple] = {}
_CACHE_LIMIT = 64


def pack(w_hh: Tensor, gates: int, width: int, kind: str) -> Tensor:
    """``w_hh`` (G*H, H) in the ``kind`` ("forward" | "backward") layout; see the module docstring."""
    hidden = w_hh.shape[1]
    panels = -(-hidden // width)
    pad = panels * width - hidden
    w = w_hh.detach()
    if kind == "forward":
        w = F.pad(w.reshape(gates, hidden, hidden), (0, 0, 0, pad))  # (G, P*W, H)
        return w.reshape(gates, panels, width, hidden).permute(1, 3, 0, 2).contiguous()
    w = F.pad(w, (0, pad))  # (G*H, P*W)
    return w.reshape(gates * hidden, panels, width).permute(1, 0, 2).contiguous()


def packed(w_hh: Tensor, gates: int, width: int, kind: str) -> Tensor:
    """:func:`pack`, from the cache when ``w_hh``'s memory has not changed since it was packed.

    The cache is keyed by the memory (storage, offset) and serves ``w_hh`` itself and its
    detached aliases (``w.detach()`` shares the storage and the version counter: a compiled
    training step runs the layer on such aliases, fastrnn/ops.py). An entry is valid while the
    tensor it was packed from is alive and still on that memory, and the version counter has not
    moved: a freed weight's memory reused by another tensor is never served its packing.
    """
    if w_hh.is_inference() or torch.compiler.is_compiling():  # no version counter to trust
        return pack(w_hh, gates, width, kind)
    storage = w_hh.untyped_storage()._cdata
    key = (storage, w_hh.storage_offset(), kind, width)
    version, ptr, layout = w_hh._version, w_hh.data_ptr(), (w_hh.shape, w_hh.stride())
    entry = _CACHE.get(key)
    if entry is not None:
        ref, v, p, lay, result = entry
        source = ref()
        if (source is not None and v == version and p == ptr and lay == layout
                and source.data_ptr() == ptr and source.untyped_storage()._cdata == storage):
            return result
    result = pack(w_hh, gates, width, kind)
    if len(_CACHE) >= _CACHE_LIMIT:
        for k in [k for k, e in _CACHE.items() if e[0]() is None]:
            del _CACHE[k]
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
    _CACHE[key] = (weakref.ref(w_hh), version, ptr, layout, result)
    return result


def clear_cache() -> None:
    _CACHE.clear()
