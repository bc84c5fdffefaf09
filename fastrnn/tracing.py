"""Whether a tracer is recording the current call (torch.compile, torch.export, ONNX, jit.trace).

Eager mode and traced mode take different paths through fastrnn: eager calls run a backend
directly (no dispatcher overhead; the reference backend's double backward), while a tracer must
record each layer-direction as one operator (:mod:`fastrnn.ops`), sizes as shapes rather than
values (:mod:`fastrnn.traced_packing`), and never torch's own recurrent kernels (they do not
trace). This is the one place that says which mode a call is in.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True under ``torch.compile``, ``torch.export`` and the dynamo ONNX exporter
    (``torch.compiler.is_compiling()``) and under ``torch.jit.trace`` and the legacy ONNX
    exporter (``torch.jit.is_tracing()``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()
