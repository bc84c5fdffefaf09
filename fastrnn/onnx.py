"""ONNX export of fastrnn layers: each layer-direction becomes one ONNX LSTM, GRU or RNN node,
with a dynamic sequence length and batch size, from a plain ``torch.onnx.export`` call:

    torch.onnx.export(model, (x, h0), "model.onnx", dynamic_shapes=...)          # dynamo=True
    torch.onnx.export(model, (x, h0), "model.onnx", dynamo=False, dynamic_axes=...)

No fastrnn-specific argument is needed (users do not read our docs before exporting):

* the dynamo exporter traces the model with torch.export; while it does (:func:`exporting`),
  :func:`fastrnn.ops.rnn_layer` records the layer as ONNX's own operator through
  ``torch.onnx.ops.symbolic_multi_out`` (:func:`symbolic_layer`) instead of fastrnn's operator;
* the legacy (TorchScript) exporter traces with torch.jit.trace: under ``auto`` on the CPU the
  modules run torch's kernels and it records ``aten::lstm`` etc., which it exports itself, as for
  torch.nn; any other backend records ``fastrnn::rnn_layer``, whose symbolic is registered at
  import (:func:`register_legacy_symbolic`).

An ExportedProgram made earlier by ``torch.export`` holds ``fastrnn::rnn_layer`` nodes: convert it
with ``torch.onnx.export(ep, ..., custom_translation_table=fastrnn.onnx.translation_table())``
or :func:`export` (needs the ``onnxscript`` package).

Mapping from fastrnn's layer (:mod:`fastrnn.functional`) to the ONNX operator (opset 14+):

* weights: one direction, ``W = weight_ih[None]``, ``R = weight_hh[None]``, ``B = cat(b_ih,
  b_hh)[None]``, with the gate blocks reordered: torch's LSTM i, f, g, o -> ONNX i, o, f, c;
  GRU r, z, n -> ONNX z, r, h, and ``linear_before_reset=1`` (torch's GRU multiplies the reset
  gate into ``W_hn h + b_hn``); Elman tanh / relu -> ``activations=["Tanh"]`` / ``["Relu"]``.
* ``reverse`` -> ``direction="reverse"``; ``lengths`` -> ``sequence_lens`` (int32). ONNX's
  semantics equal fastrnn's: past its length a sequence outputs zeros and its state stays, and the
  reverse direction starts at each sequence's own last element.
* A bidirectional layer is two nodes (one per direction), as in the traced graph.

Not expressible (an error at export time, never a silently different model):

* ``proj_size > 0``: ONNX's LSTM has no projection (``W_hr``);
* bfloat16: ONNX's recurrent operators take float16, float and double only;
* a module fed a ``PackedSequence``: the packing arithmetic around the layers is data-dependent
  (see :func:`check_packed_exportable`); export with padded input and pass the lengths through
  :mod:`fastrnn.functional` (``lengths=``), which maps to ``sequence_lens``.

float64 exports a valid double-precision ONNX model, but onnxruntime has no double kernels for
LSTM / GRU / RNN (it refuses to load it): export in float32 to run it there. onnxruntime also
rejects a ``sequence_lens`` entry of 0 at run time.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .cells import Cell, get_cell

try:  # the dynamo exporter's "export in progress" flag; read directly (see exporting())
    from torch.onnx._internal.exporter import _flags as _exporter_flags
except ImportError:  # pragma: no cover - a torch without the dynamo exporter
    _exporter_flags = None

#: ONNX gate order, as indices into torch's gate blocks (fastrnn.cells' order).
_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}
_ONNX_OP = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}
_ONNX_DTYPES = (torch.float16, torch.float32, torch.float64)
#: TorchScript's scalar type names (the legacy exporter's graph) of the dtypes it can meet here.
_SCALAR_TYPES = {"Half": torch.float16, "Float": torch.float32, "Double": torch.float64, "BFloat16": torch.bfloat16}


class OnnxExportError(ValueError):
    """A fastrnn layer configuration that ONNX's recurrent operators cannot express."""


def exporting() -> bool:
    """Whether torch.onnx.export(dynamo=True) is tracing the model right now.

    The exporter's own flag, read as a module attribute: ``torch.onnx.is_in_onnx_export()``
    imports inside its body, which TorchDynamo guards on (a recompile per call).
    """
    return _exporter_flags is not None and bool(getattr(_exporter_flags, "_is_onnx_exporting", False))


def _check_exportable(cell: str, dtype, has_projection: bool) -> None:
    if cell not in _ONNX_OP:  # a cell added to fastrnn.cells without an ONNX mapping here
        raise OnnxExportError(
            f"fastrnn: a {cell} layer cannot be exported to ONNX: ONNX's recurrent operators "
            f"express the cells {sorted(_ONNX_OP)} only"
        )
    if has_projection:
        raise OnnxExportError(
            "fastrnn: an LSTM with proj_size > 0 cannot be exported to ONNX: ONNX's LSTM operator "
            "has no projection weight (weight_hr). Export a model without proj_size."
        )
    dtype = _torch_dtype(dtype)
    if dtype is not None and dtype not in _ONNX_DTYPES:
        raise OnnxExportError(
            f"fastrnn: a {cell} layer in {dtype} cannot be exported to ONNX: ONNX's recurrent "
            "operators take float16, float32 and float64 only"
        )


def check_packed_exportable() -> None:
    """Refuse a PackedSequence module input while an ONNX exporter traces (module docstring)."""
    if exporting() or (torch.jit.is_tracing() and torch.onnx.is_in_onnx_export()):  # dynamo / legacy
        raise OnnxExportError(
            "fastrnn: a module fed a PackedSequence cannot be exported to ONNX (its packing "
            "arithmetic is data-dependent). Export with padded input; for per-sequence lengths "
            "call fastrnn.functional's layers with lengths=, which export as ONNX sequence_lens."
        )


def _torch_dtype(dtype) -> Optional[torch.dtype]:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:  # an onnx_ir.DataType
        import onnx_ir

        return {onnx_ir.DataType.FLOAT: torch.float32, onnx_ir.DataType.DOUBLE: torch.float64,
                onnx_ir.DataType.FLOAT16: torch.float16}.get(dtype, None)
    except ImportError:  # pragma: no cover - onnxscript brings onnx_ir
        return None


def _attributes(cell: Cell, hidden: int, reverse: bool) -> Dict[str, Any]:
    attrs: Dict[str, Any] = {"hidden_size": hidden, "direction": "reverse" if reverse else "forward"}
    if cell.name == "gru":
        attrs["linear_before_reset"] = 1
    elif cell.name != "lstm":
        attrs["activations"] = ["Tanh" if cell.name == "rnn_tanh" else "Relu"]
    return attrs


def _gate_rows(cell: Cell, hidden: int) -> torch.Tensor:
    """Row indices that put torch's gate blocks of a weight or bias in ONNX's order."""
    return torch.cat([torch.arange(k * hidden, (k + 1) * hidden) for k in _GATE_ORDER[cell.name]])


# ----------------------------------------------------------------- dynamo exporter: torch.onnx.ops


def symbolic_layer(cell: Cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """The layer as one ONNX node, recorded while the dynamo exporter traces (:func:`exporting`);
    returns fastrnn.functional.rnn_layer's (out, h_T, c_T or None)."""
    _check_exportable(cell.name, x.dtype, weight_hr is not None)
    hidden = weight_hh.shape[0] // cell.num_gates

    def onnx_order(t):  # constant weights: the exporter folds the reorder into the initializer
        return t if cell.num_gates == 1 else t.index_select(0, _gate_rows(cell, hidden).to(t.device))

    bias = None if bias_ih is None else torch.cat([onnx_order(bias_ih), onnx_order(bias_hh)])[None]
    inputs = [x, onnx_order(weight_ih)[None], onnx_order(weight_hh)[None], bias,
              None if lengths is None else lengths.to(torch.int32), h0[None]]
    if cell.has_cell_state:
        inputs.append(c0[None])
    seq_len, batch = x.shape[0], x.shape[1]
    shapes = [(seq_len, 1, batch, hidden), (1, batch, hidden)] + [(1, batch, hidden)] * cell.has_cell_state
    outputs = torch.onnx.ops.symbolic_multi_out(
        _ONNX_OP[cell.name], inputs, _attributes(cell, hidden, reverse),
        dtypes=[x.dtype] * len(shapes), shapes=shapes, version=14,
    )
    c = outputs[2][0] if cell.has_cell_state else None
    return outputs[0][:, 0], outputs[1][0], c


# ------------------------------------------------------- legacy (TorchScript) exporter: a symbolic


def _legacy_symbolic(g, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                     backend):
    """``fastrnn::rnn_layer`` -> one ONNX node, for torch.onnx.export(dynamo=False)."""
    from torch.onnx import symbolic_helper as sh

    cell = get_cell(sh._maybe_get_const(cell, "s"))
    reverse = bool(sh._maybe_get_const(reverse, "b"))
    dtype = _SCALAR_TYPES.get(x.type().scalarType())  # None (not checked) if the tracer knows none
    _check_exportable(cell.name, dtype, not sh._is_none(weight_hr))
    hidden = sh._get_tensor_sizes(weight_hh)[0] // cell.num_gates

    def absent():
        none = g.op("prim::Constant")
        none.setType(torch._C.OptionalType.ofTensor())
        return none

    def onnx_order(t):
        if cell.num_gates == 1:
            return t
        return g.op("Gather", t, g.op("Constant", value_t=_gate_rows(cell, hidden)), axis_i=0)

    def leading_one(t):
        return sh._unsqueeze_helper(g, t, [0])

    bias = absent()
    if not sh._is_none(bias_ih):
        bias = leading_one(g.op("Concat", onnx_order(bias_ih), onnx_order(bias_hh), axis_i=0))
    seq_lens = absent() if sh._is_none(lengths) else g.op("Cast", lengths, to_i=6)  # INT32
    inputs = [x, leading_one(onnx_order(weight_ih)), leading_one(onnx_order(weight_hh)), bias, seq_lens,
              leading_one(h0)]
    if cell.has_cell_state:
        inputs.append(leading_one(c0))
    attrs = {f"{k}_{'s' if isinstance(v, (str, list)) else 'i'}": v for k, v in _attributes(cell, hidden, reverse).items()}
    outputs = g.op(_ONNX_OP[cell.name], *inputs, outputs=3 if cell.has_cell_state else 2, **attrs)
    out = sh._squeeze_helper(g, outputs[0], [1])
    h = sh._squeeze_helper(g, outputs[1], [0])
    if cell.has_cell_state:
        c = sh._squeeze_helper(g, outputs[2], [0])
    else:  # the operator's empty third output
        c = g.op("Constant", value_t=torch.zeros(0, dtype=dtype or torch.float32))
    return out, h, c


def register_legacy_symbolic() -> None:
    """Register :func:`_legacy_symbolic` for ``fastrnn::rnn_layer`` with the TorchScript exporter."""
    register = getattr(torch.onnx, "register_custom_op_symbolic", None)
    if register is not None:  # gone from torch versions without the TorchScript exporter
        register("fastrnn::rnn_layer", _legacy_symbolic, 9)


# -------------------------------------- an ExportedProgram with fastrnn::rnn_layer: onnxscript


def _rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    """Translation of ``fastrnn::rnn_layer`` into one ONNX recurrent node (see the module docstring)."""
    from onnxscript import opset18 as op

    _check_exportable(cell, getattr(x, "dtype", None), weight_hr is not None)
    spec = get_cell(cell)
    order = _GATE_ORDER[spec.name]
    hidden = _hidden_size(weight_hh, spec.num_gates)

    def reordered(w):
        if len(order) == 1:
            return w
        # Slices (not one Split): single-output nodes on initializers, which the exporter folds
        # into reordered constant weights.
        blocks = [op.Slice(w, op.Constant(value_ints=[k * hidden]), op.Constant(value_ints=[(k + 1) * hidden]),
                           op.Constant(value_ints=[0])) for k in order]
        return op.Concat(*blocks, axis=0)

    zero = op.Constant(value_ints=[0])
    W = op.Unsqueeze(reordered(weight_ih), zero)
    R = op.Unsqueeze(reordered(weight_hh), zero)
    B = None
    if bias_ih is not None:
        B = op.Unsqueeze(op.Concat(reordered(bias_ih), reordered(bias_hh), axis=0), zero)
    seq_lens = None if lengths is None else op.Cast(lengths, to=6)  # INT32
    initial_h = op.Unsqueeze(h0, zero)
    direction = "reverse" if reverse else "forward"
    if spec.name == "lstm":
        y, y_h, y_c = op.LSTM(x, W, R, B, seq_lens, initial_h, op.Unsqueeze(c0, zero),
                              hidden_size=hidden, direction=direction)
        c = op.Squeeze(y_c, zero)
    elif spec.name == "gru":
        y, y_h = op.GRU(x, W, R, B, seq_lens, initial_h, hidden_size=hidden, direction=direction,
                        linear_before_reset=1)
        c = None
    else:
        activation = "Tanh" if spec.name == "rnn_tanh" else "Relu"
        y, y_h = op.RNN(x, W, R, B, seq_lens, initial_h, hidden_size=hidden, direction=direction,
                        activations=[activation])
        c = None
    out = op.Squeeze(y, op.Constant(value_ints=[1]))  # (T, 1, B, H) -> (T, B, H)
    h = op.Squeeze(y_h, zero)
    if c is None:  # the operator's empty third output
        c = op.CastLike(op.ConstantOfShape(zero), x)
    return out, h, c


def _hidden_size(weight_hh, num_gates: int) -> int:
    rows = weight_hh.shape[0]
    rows = rows if isinstance(rows, int) else int(rows.value if hasattr(rows, "value") else rows)
    return rows // num_gates


def translation_table() -> Dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    return {torch.ops.fastrnn.rnn_layer.default: _rnn_layer}


def export(model, args, f=None, *, custom_translation_table=None, **kwargs):
    """``torch.onnx.export(model, args, f, dynamo=True, ...)`` with fastrnn's translations added."""
    table = translation_table()
    table.update(custom_translation_table or {})
    kwargs.setdefault("dynamo", True)
    return torch.onnx.export(model, args, f, custom_translation_table=table, **kwargs)
