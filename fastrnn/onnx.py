"""ONNX export of fastrnn layers: each ``fastrnn::rnn_layer`` operator becomes one ONNX LSTM, GRU
or RNN node, with a dynamic sequence length and batch size.

    import fastrnn.onnx
    torch.onnx.export(model, (x,), "model.onnx", dynamo=True,
                      custom_translation_table=fastrnn.onnx.translation_table(),
                      dynamic_shapes=...)

or ``fastrnn.onnx.export(model, (x,), "model.onnx", dynamic_shapes=...)``, which passes the table
(merged with any ``custom_translation_table`` given). Needs the ``onnxscript`` package (imported
only when a model is exported).

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
* bfloat16: ONNX's recurrent operators take float16, float and double only.

onnxruntime rejects a ``sequence_lens`` entry of 0 at run time; PackedSequence never has one.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .cells import get_cell

#: ONNX gate order, as indices into torch's gate blocks (fastrnn.cells' order).
_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}
_ONNX_DTYPES = (torch.float16, torch.float32, torch.float64)


class OnnxExportError(ValueError):
    """A fastrnn layer configuration that ONNX's recurrent operators cannot express."""


def _check_exportable(cell: str, x, weight_hr) -> None:
    if weight_hr is not None:
        raise OnnxExportError(
            "fastrnn: an LSTM with proj_size > 0 cannot be exported to ONNX: ONNX's LSTM operator "
            "has no projection weight (weight_hr). Export a model without proj_size."
        )
    dtype = getattr(x, "dtype", None)
    if dtype is not None and _torch_dtype(dtype) not in _ONNX_DTYPES:
        raise OnnxExportError(
            f"fastrnn: a {cell} layer in {dtype} cannot be exported to ONNX: ONNX's recurrent "
            "operators take float16, float32 and float64 only"
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


def _rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    """Translation of ``fastrnn::rnn_layer`` into one ONNX recurrent node (see the module docstring)."""
    from onnxscript import opset18 as op

    _check_exportable(cell, x, weight_hr)
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
