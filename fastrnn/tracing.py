"""Whether a tracer is recording the current call (torch.compile, torch.export, ONNX, jit.trace).

Eager mode and traced mode take different paths through fastrnn: eager calls run a backend
directly (no dispatcher overhead; the reference backend's double backward), while a tracer must
record each layer-direction as one operator (:mod:`fastrnn.ops`), sizes as shapes rather than
values (:mod:`fastrnn.traced_packing`). This is the one place that says which mode a call is in.

Two kinds of tracer differ in one respect: TorchDynamo (torch.compile, torch.export, the dynamo
ONNX exporter: :func:`compiling`) never sees torch's own recurrent kernels (it refuses them, and
inductor cannot lower the CPU one), so a compiled module or cell decides nothing and records
fastrnn's operators, which decide where the graph runs; ``torch.jit.trace`` records whatever
runs, so a module decides as in eager mode and, on backend ``torch``, records torch.nn's very
nodes (``aten::lstm``), on other backends fastrnn's operators.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True under ``torch.compile``, ``torch.export`` and the dynamo ONNX exporter
    (``torch.compiler.is_compiling()``) and under ``torch.jit.trace`` and the legacy ONNX
    exporter (``torch.jit.is_tracing()``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


#: True under TorchDynamo: ``torch.compile``, ``torch.export``, the dynamo ONNX exporter. torch's
#: function itself, not a wrapper: every eager cell step asks, and a call is a few percent of it.
compiling = torch.compiler.is_compiling


def exporting() -> bool:
    """True while ``torch.export`` traces (a program that must run in another process or on
    another machine). Reads the flag ``torch.compiler.is_exporting()`` returns, because TorchDynamo
    in torch 2.11 folds that call itself to True under torch.compile as well."""
    return bool(getattr(torch.compiler, "_is_exporting_flag", False))
