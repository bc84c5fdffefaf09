"""Registration of the Triton backend (``backend="triton"``) and its support checks.

Nothing here imports Triton at module level: ``import fastrnn`` must stay fast and work without
Triton. Triton is imported by :func:`unavailable` (only consulted when the backend is named, as
``auto`` skips it first for being unverified) and by the kernel modules when a layer runs.

Supported: cells rnn_tanh, rnn_relu, lstm, gru; forward and reverse direction; per-sequence
lengths (0 allowed: the state passes through); given or zero h0/c0; with or without biases;
dtypes float32, float16, bfloat16 (fp32 accumulation and state); CUDA tensors, and CPU tensors
when Triton's interpreter is on (``TRITON_INTERPRET=1``); hidden sizes up to
:func:`fastrnn.triton.capacity.capacity` (small-H kernels below the small-H limit, large-H
kernels above it). Backward works (in train and eval mode); double backward works by
recomputing the backward on the reference when a graph of it is recorded (fastrnn/fused.py).
Not supported (each with a reason string, so ``auto`` falls back and a named request raises
:class:`fastrnn.BackendError`): proj_size > 0; float64 (use the reference backend; the tests
compare the fp32 kernels with a float64 reference); hidden sizes beyond
:func:`fastrnn.triton.capacity.capacity` (the larger of the small-H and large-H limits);
T * B >= 2^31 or B * H >= 2^30.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from ..backends import Backend, LayerProblem, register_backend
from ..measured import auto_rule
from .capacity import capacity

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """Whether Triton kernels defined now run in Triton's CPU interpreter (same test as Triton's)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes", "y")


@functools.lru_cache(maxsize=None)
def _import_error() -> Optional[str]:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return (f"triton cannot be imported ({type(exc).__name__}: {exc}); CUDA builds of torch "
                f"bring it, or `pip install fastrnn[triton]`")
    return None


def unavailable() -> Optional[str]:
    why = _import_error()
    if why is not None:
        return why
    if not interpreting() and not torch.cuda.is_available():
        return "no CUDA GPU, and Triton's CPU interpreter is off (set TRITON_INTERPRET=1)"
    return None


def unsupported(problem: LayerProblem) -> Optional[str]:
    cell = problem.cell
    if cell.kernel_id is None:
        return f"cell {cell.name!r} has no Triton kernel (fastrnn/cells.py: kernel_id None)"
    if problem.proj_size > 0:
        return "proj_size > 0 (LSTM projection) is not implemented in the Triton kernels"
    if problem.dtype not in SUPPORTED_DTYPES:
        return f"dtype {problem.dtype} is not supported (float32, float16, bfloat16 are)"
    if problem.device.type == "cpu":
        if not interpreting():
            return "CPU tensors need Triton's interpreter (TRITON_INTERPRET=1)"
    elif problem.device.type != "cuda":
        return f"device {problem.device} is not supported (cuda, or cpu under TRITON_INTERPRET=1)"
    limit = capacity(cell.num_gates, torch.empty((), dtype=problem.dtype).element_size())
    if problem.hidden_size > limit:
        return (
            f"hidden_size {problem.hidden_size} exceeds the Triton kernels' capacity of {limit} "
            f"for {cell.name} in {problem.dtype} (W_hh must fit on chip across the programs; "
            f"see fastrnn/triton/capacity.py)"
        )
    # Offsets are int64 from the row index t*B + b on; that index itself, and the large-H
    # exchange-buffer offset 2*B*H, are int32.
    if problem.seq_len * problem.batch_size >= 2**31:
        return "seq_len * batch_size >= 2^31"
    if problem.batch_size * problem.hidden_size >= 2**30:
        return "batch_size * hidden_size >= 2^30"
    return None


register_backend(
    Backend(
        name="triton",
        priority=10,
        run_layer="fastrnn.triton.autograd:triton_layer",  # imports the kernels when a layer first runs
        unavailable=unavailable,
        unsupported=unsupported,
        auto=auto_rule("triton"),  # only where verified on a GPU and measured faster than torch
        training="fastrnn.triton.autograd:TRAINING",
    )
)
