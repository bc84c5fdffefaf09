"""Registration of the fused CPU backend (``backend="cpu"``) and its support checks.

Nothing here imports the compiled extension ``fastrnn._cpu`` at module level: ``import fastrnn``
must stay fast and work where it was not built. ``unavailable()`` imports it; :mod:`.autograd`
(named as the backend's ``run_layer``, imported when a layer first runs) uses it.

Supported: cells rnn_tanh, rnn_relu, lstm, gru; forward and reverse direction; per-sequence
lengths (0 allowed); given or zero h0/c0; with or without biases; float32 CPU tensors; forward
and backward (train and eval mode), double backward by recomputing on the reference. Not
supported (reason strings; ``auto`` falls back, a named request raises
:class:`fastrnn.BackendError`): other devices, dtypes other than float32 (float64 runs on
"torch" or "reference"), proj_size > 0.

``auto`` picks it only where :data:`fastrnn.measured.CPU_FASTER_THAN_TORCH` records it measured
faster than torch's kernels for the instruction set, cell, batch and hidden size.
"""

from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch

from ..backends import Backend, LayerProblem, register_backend
from ..measured import why_not_auto_cpu
from . import isa

EXTENSION_FUNCTIONS = ("forward", "backward", "supported_isas", "vector_width")


@functools.lru_cache(maxsize=None)
def _extension_error() -> Optional[str]:
    try:
        from .._build_info import CPU_EXTENSION_TORCH as built_for
    except ImportError:  # no record (not built by setup.py): try the import
        built_for = None
    if built_for is not None and built_for != torch.__version__:
        # A C++ extension compiled against another torch can crash the process when loaded.
        return (f"fastrnn._cpu was compiled against torch {built_for}, but this is torch {torch.__version__}; "
                f"rebuild it (`pip install --no-build-isolation <fastrnn source>`, or in a checkout "
                f"`python setup.py build_ext --inplace`)")
    try:
        ext = importlib.import_module("fastrnn._cpu")
    except ImportError as exc:
        try:
            from .._build_info import CPU_EXTENSION_SKIPPED as why
        except ImportError:  # built before setup.py kept this record, or not by setup.py
            why = None
        return (f"this fastrnn install has no CPU extension fastrnn._cpu "
                f"({'not built: ' + why if why else exc}). It is compiled when fastrnn is installed "
                f"from source with torch and a GCC or Clang compiler present: "
                f"`pip install --no-build-isolation <fastrnn source folder or sdist>` "
                f"(in a source checkout: `python setup.py build_ext --inplace`)")
    missing = [name for name in EXTENSION_FUNCTIONS if not hasattr(ext, name)]
    if missing:
        return f"fastrnn._cpu is an old build without {missing}; rebuild it"
    return None


def unavailable() -> Optional[str]:
    return _extension_error() or isa.unavailable()


def unsupported(problem: LayerProblem) -> Optional[str]:
    if problem.device.type != "cpu":
        return f"the cpu backend needs CPU tensors, got tensors on {problem.device}"
    if problem.dtype != torch.float32:
        return (f"dtype {problem.dtype} is not supported: the cpu backend runs float32 only "
                f"(other dtypes run on backend 'torch' or 'reference')")
    if problem.proj_size > 0:
        return "proj_size > 0 (LSTM projection) is not implemented in the cpu backend"
    return None


def not_auto(problem: LayerProblem) -> Optional[str]:
    if problem.device.type != "cpu":  # every forward on a GPU asks: be quick
        return "not a CPU problem"
    why = unavailable()
    return why if why is not None else why_not_auto_cpu(isa.current(), problem)


register_backend(
    Backend(
        name="cpu",
        priority=15,  # before "torch": admitted to auto only where measured faster than it
        run_layer="fastrnn.cpu.autograd:cpu_layer",  # imports fastrnn._cpu when a layer first runs
        unavailable=unavailable,
        unsupported=unsupported,
        auto=not_auto,
        training="fastrnn.cpu.autograd:TRAINING",
    )
)
