"""One layer-direction as one PyTorch operator, for tracers (torch.compile, torch.export, ONNX, jit).

Eager mode runs a layer on its backend directly as plain Python (a time loop on the reference
backend, one kernel call on the others). A tracer would unroll that loop: a graph that
grows with T, a recompile for every new T, and a traced length baked into the model. So while
tracing, ``rnn_layer`` calls the custom operator registered here instead::

    fastrnn::rnn_layer(str cell, Tensor x, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh,
                       Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? lengths, bool reverse,
                       str backend) -> (Tensor out, Tensor h_T, Tensor c_T)

Tracers see one node per layer-direction whatever backend runs inside; the operator's
implementation chooses the backend when it runs (:func:`fastrnn.backends.run_layer` with the
``backend`` string of the schema, so ``"auto"`` in an exported model picks what the machine
running it supports) and runs that backend's ``run_layer``. ``c_T`` is an empty tensor of shape
(0,) for cells without a cell state (an operator's outputs cannot be None).

Why per layer-direction, not per module: that is the seam every backend implements and the unit
ONNX's LSTM / GRU / RNN operators express; dropout between layers stays outside, as ordinary
traced ``F.dropout``, so the operator is deterministic and its backward needs no RNG state.

Autograd: ``fastrnn::rnn_layer_backward`` recomputes the layer with autograd on (the chosen
backend's own forward and backward) and returns the gradients of every tensor input, so it is
right for every backend. The price: a compiled or exported training step runs each layer's
forward twice. The backward operator is not itself differentiable (double backward through it
raises); double backward works in eager mode, which never uses these operators (:mod:`fastrnn.tracing`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import backends, onnx as _onnx
from .cells import get_cell
from .layer_checks import check_op_args

def _fresh(outputs, inputs) -> list:
    """Outputs as new tensors: an operator may not return (a view of) an input or another output."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    fresh = []
    for t in outputs:
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone(memory_format=torch.contiguous_format)
        elif not t.is_contiguous():  # the fake implementation promises contiguous outputs
            t = t.contiguous()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        fresh.append(t)
    return fresh


@torch.library.custom_op("fastrnn::rnn_layer", mutates_args=())
def rnn_layer_op(
    cell: str,
    x: Tensor,
    h0: Tensor,
    c0: Optional[Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor],
    bias_hh: Optional[Tensor],
    weight_hr: Optional[Tensor],
    lengths: Optional[Tensor],
    reverse: bool,
    backend: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One layer-direction on the backend ``backend`` selects; see the module docstring.

    A public entry point (an exported program may call it with anything its schema admits), so
    every argument is checked before a backend runs (:func:`fastrnn.layer_checks.check_op_args`).
    """
    check_op_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend)
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths)
    out, h, c = backends.run_layer(get_cell(cell), *tensors, reverse, backend)
    if c is None:
        c = x.new_empty((0,))
    return tuple(_fresh((out, h, c), tensors))


@rnn_layer_op.register_fake
def _rnn_layer_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    check_op_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend,
                  values=False)
    seq_len, batch = x.shape[0], x.shape[1]
    h_out = weight_hh.shape[1]
    hidden = weight_hh.shape[0] // get_cell(cell).num_gates
    c_shape = (batch, hidden) if get_cell(cell).has_cell_state else (0,)
    return x.new_empty((seq_len, batch, h_out)), x.new_empty((batch, h_out)), x.new_empty(c_shape)


def _autograd_enabled_inside_an_op():
    """A guard that lets autograd record inside an operator's implementation.

    The dispatcher runs an implementation below the autograd keys (they are in the thread's
    exclude set), so ``torch.enable_grad()`` alone records nothing there; this lifts only the
    autograd keys from the exclude set for the recompute in ``rnn_layer_backward``.
    """
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.AutogradCPU, keys.AutogradOther, keys.AutogradNestedTensor):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


@torch.library.custom_op("fastrnn::rnn_layer_backward", mutates_args=())
def rnn_layer_backward_op(
    cell: str,
    x: Tensor,
    h0: Tensor,
    c0: Optional[Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor],
    bias_hh: Optional[Tensor],
    weight_hr: Optional[Tensor],
    lengths: Optional[Tensor],
    reverse: bool,
    backend: str,
    grad_out: Tensor,
    grad_h: Tensor,
    grad_c: Tensor,
) -> List[Tensor]:
    """Gradients of (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) (empty for an absent input), by
    recomputing the layer on the chosen backend with autograd on."""
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    check_op_args(cell, *tensors, lengths, reverse, backend)
    expected = {"grad_out": (grad_out, (x.shape[0], x.shape[1], h0.shape[1])), "grad_h": (grad_h, tuple(h0.shape))}
    if c0 is not None:
        expected["grad_c"] = (grad_c, tuple(c0.shape))
    for name, (grad, shape) in expected.items():
        if tuple(grad.shape) != shape or grad.dtype != x.dtype or grad.device != x.device:
            raise RuntimeError(f"{name} must be a {x.dtype} tensor of shape {shape} on {x.device}, got "
                               f"{grad.dtype} of shape {tuple(grad.shape)} on {grad.device}")
    with _autograd_enabled_inside_an_op(), torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
        out, h, c = backends.run_layer(get_cell(cell), *leaves, lengths, reverse, backend)
        outputs, grads = [out, h], [grad_out, grad_h]
        if c is not None:
            outputs.append(c)
            grads.append(grad_c)
        wrt = [t for t in leaves if t is not None]
        found = iter(torch.autograd.grad(outputs, wrt, grads, allow_unused=True))
    result = []
    for t in leaves:
        if t is None:
            result.append(x.new_empty((0,)))
            continue
        g = next(found)
        result.append(torch.zeros_like(t) if g is None else g.detach())
    return _fresh(result, (*tensors, lengths, grad_out, grad_h, grad_c))


@rnn_layer_backward_op.register_fake
def _rnn_layer_backward_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                             reverse, backend, grad_out, grad_h, grad_c):
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    return [x.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
            for t in tensors]


def _setup_context(ctx, inputs, output):
    cell, *tensors, lengths, reverse, backend = inputs
    ctx.cell, ctx.reverse, ctx.backend = cell, reverse, backend
    ctx.save_for_backward(*tensors, lengths)


def _backward(ctx, grad_out, grad_h, grad_c):
    *tensors, lengths = ctx.saved_tensors
    # autograd.Function materializes the gradient of an unused output as zeros: none is None.
    grads = rnn_layer_backward_op(ctx.cell, *tensors, lengths, ctx.reverse, ctx.backend, grad_out, grad_h, grad_c)
    grads = [None if t is None else g for t, g in zip(tensors, grads)]
    return (None, *grads, None, None, None)


rnn_layer_op.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "fastrnn: double backward through a traced fastrnn layer (torch.compile / torch.export / "
        "jit.trace: the fastrnn::rnn_layer operator) is not supported; run the model in eager mode, "
        "where the reference backend supports it"
    )


rnn_layer_backward_op.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


_onnx.register_legacy_symbolic()  # torch.onnx.export(dynamo=False) of fastrnn::rnn_layer


def rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    """The operator with fastrnn.functional.rnn_layer's return convention (c_T None without a
    cell state); ONNX's own recurrent operator instead while the dynamo ONNX exporter traces."""
    if _onnx.exporting():
        return _onnx.symbolic_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                    reverse)
    out, h, c = rnn_layer_op(cell.name, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                             reverse, backend)
    return out, h, (c if cell.has_cell_state else None)
