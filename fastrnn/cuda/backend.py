"""Registration of the CUDA C++ backend (``backend="cuda"``) and its support checks.

Nothing here imports the compiled extension ``fastrnn._C`` at module level: ``import fastrnn``
must stay fast and work where the extension was not built. ``unavailable()`` imports it (only
consulted when the backend is named: ``auto`` skips it first for being unverified), and
:mod:`.autograd` uses it when a layer runs.

Supported: cells rnn_tanh, rnn_relu, lstm, gru; forward and reverse direction; per-sequence
lengths (0 allowed); given or zero h0/c0; with or without biases; float32, float16, bfloat16
(fp32 math, fp32 carried state); CUDA tensors; hidden sizes up to
:func:`fastrnn.cuda.capacity.capacity` for the tensor's GPU. Backward (train and eval mode);
double backward by recomputing the backward on the reference when a graph of it is recorded.
Not supported (reason strings; ``auto`` falls back, a named request raises
:class:`fastrnn.BackendError`): CPU tensors, proj_size > 0, float64, hidden sizes beyond the
capacity, and a GPU that cannot hold all of the kernel's blocks at once (no cooperative launch,
a partitioned or shared GPU): ``fastrnn._C.launch_fit`` asks the CUDA runtime the same questions
the launcher asks before each launch.

``auto`` picks it only for configurations in :data:`fastrnn.measured.FASTER_THAN_TORCH`: these
kernels have been compiled (sm_80, sm_90a) but never yet run on a GPU, so that table is empty.
"""

from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch

from ..backends import Backend, LayerProblem, register_backend
from ..measured import auto_rule
from .capacity import H100_SMEM_PER_BLOCK, H100_SMS, MAX_BATCH_TILE, capacity

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
EXTENSION_FUNCTIONS = ("rnn_forward", "rnn_backward", "plan", "launch_fit")


@functools.lru_cache(maxsize=None)
def _extension_error() -> Optional[str]:
    try:
        ext = importlib.import_module("fastrnn._C")
    except ImportError as exc:
        try:
            from .._build_info import CUDA_EXTENSION_SKIPPED as why
        except ImportError:  # built before setup.py kept a record, or not by setup.py
            why = None
        return (f"this fastrnn install has no CUDA extension fastrnn._C "
                f"({'not built: ' + why if why else exc}). It is compiled when fastrnn is installed "
                f"from source on a machine with nvcc and a CUDA build of torch: "
                f"`FASTRNN_BUILD_CUDA=1 pip install --no-build-isolation <fastrnn source folder or sdist>` "
                f"(in a source checkout: `python setup.py build_ext --inplace`)")
    missing = [name for name in EXTENSION_FUNCTIONS if not hasattr(ext, name)]
    if missing:
        return f"fastrnn._C is an old build without {missing}; rebuild it"
    return None


def unavailable() -> Optional[str]:
    why = _extension_error()
    if why is not None:
        return why
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def device_limits(device: torch.device):
    """(SM count, opt-in shared memory per block) of ``device``; H100 figures off the GPU."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return H100_SMS, H100_SMEM_PER_BLOCK
    props = torch.cuda.get_device_properties(device)
    return props.multi_processor_count, props.shared_memory_per_block_optin


def unsupported(problem: LayerProblem) -> Optional[str]:
    cell = problem.cell
    if cell.kernel_id is None:
        return f"cell {cell.name!r} has no CUDA kernel (fastrnn/cells.py: kernel_id None)"
    if problem.device.type != "cuda":
        return f"the CUDA backend needs CUDA tensors, got tensors on {problem.device}"
    if problem.proj_size > 0:
        return "proj_size > 0 (LSTM projection) is not implemented in the CUDA kernels"
    if problem.dtype not in SUPPORTED_DTYPES:
        return f"dtype {problem.dtype} is not supported (float32, float16, bfloat16 are)"
    sms, smem = device_limits(problem.device)
    limit = capacity(cell.num_gates, torch.empty((), dtype=problem.dtype).element_size(), sms, smem)
    if problem.hidden_size > limit:
        return (
            f"hidden_size {problem.hidden_size} exceeds the CUDA kernels' capacity of {limit} for "
            f"{cell.name} in {problem.dtype} on this GPU ({sms} SMs, {smem} bytes of shared memory "
            f"per block: each SM's slice of W_hh must fit; see fastrnn/cuda/capacity.py)"
        )
    if _extension_error() is None and torch.cuda.is_available():
        index = problem.device.index if problem.device.index is not None else torch.cuda.current_device()
        # The plan depends on the batch only up to one full batch tile.
        return _launch_fit(cell.kernel_id, problem.dtype, problem.hidden_size,
                           min(problem.batch_size, MAX_BATCH_TILE), index)
    return None


@functools.lru_cache(maxsize=1024)
def _launch_fit(cell_id: int, dtype: torch.dtype, hidden: int, batch: int, device: int) -> Optional[str]:
    from fastrnn import _C

    try:
        why = _C.launch_fit(cell_id, dtype, hidden, max(batch, 1), device)
    except RuntimeError as exc:  # a CUDA runtime error while asking: not runnable, say why
        return f"the CUDA kernels' launch check failed on GPU {device}: {exc}"
    return f"the CUDA kernels cannot run here: {why}" if why else None


register_backend(
    Backend(
        name="cuda",
        priority=20,
        run_layer="fastrnn.cuda.autograd:cuda_layer",  # imports the kernels when a layer first runs
        unavailable=unavailable,
        unsupported=unsupported,
        auto=auto_rule("cuda"),  # only where verified on a GPU and measured faster than torch
        training="fastrnn.cuda.autograd:TRAINING",
    )
)
