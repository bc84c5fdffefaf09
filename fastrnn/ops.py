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

Autograd, two forms:

* Compiled training (torch.compile, not torch.export, with grad on and an input that requires
  it) records the training form instead::

      fastrnn::rnn_layer_train(<rnn_layer's arguments>) -> (out, h_T, c_T, Tensor workspace)
      fastrnn::rnn_layer_train_backward(<rnn_layer's arguments>, out, workspace, grad_out, grad_h,
                                        grad_c) -> Tensor[]   (gradients, as rnn_layer_backward)

  ``workspace`` is a 1-D float32 tensor holding what the chosen backend's own backward needs
  beyond the inputs and outputs, so the backward runs no forward again and a compiled training
  step costs what eager's costs. The backend is still chosen when the operator runs (the graph
  records ``backend`` as given, e.g. ``"auto"``); the backward operator takes the same decision
  again from the same arguments and settings (decisions are a function of them,
  :mod:`fastrnn.backends`), so it reads the workspace of the backend that wrote it. The
  workspace's size is the backend's business, unknown to the tracer: the fake implementation
  gives it an unbacked size (``torch.library.get_ctx().new_dynamic_size()``). A backend provides
  the form with ``train_forward`` / ``train_backward`` (:class:`fastrnn.backends.Backend`): the
  fused kernel backends (cpu, triton, cuda: their kernels' saved activations,
  :func:`fastrnn.fused.training_forward`). A backend without one (reference; torch) runs its
  plain forward with an empty workspace, and its backward recomputes the forward with autograd
  on, as ``rnn_layer_backward`` does.
* Everything else (torch.export, the ONNX exporters, inference) records ``fastrnn::rnn_layer``,
  whose backward ``fastrnn::rnn_layer_backward`` recomputes the layer with autograd on (the chosen
  backend's own forward and backward) and returns the gradients of every tensor input: right for
  every backend and portable (an exported program holds no backend-specific workspace), at the
  price of each layer's forward running twice in an exported training step.

Neither backward operator is itself differentiable (double backward through one raises; under
torch.compile AOTAutograd refuses double backward before it gets there); double backward works
in eager mode, which never uses these operators (:mod:`fastrnn.tracing`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import backends, onnx as _onnx
from .cells import Cell, get_cell
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


def _check_grads(x, h0, c0, grad_out, grad_h, grad_c) -> None:
    """The output gradients a backward operator was given, against the layer's shapes."""
    expected = {"grad_out": (grad_out, (x.shape[0], x.shape[1], h0.shape[1])), "grad_h": (grad_h, tuple(h0.shape))}
    if c0 is not None:
        expected["grad_c"] = (grad_c, tuple(c0.shape))
    for name, (grad, shape) in expected.items():
        if tuple(grad.shape) != shape or grad.dtype != x.dtype or grad.device != x.device:
            raise RuntimeError(f"{name} must be a {x.dtype} tensor of shape {shape} on {x.device}, got "
                               f"{grad.dtype} of shape {tuple(grad.shape)} on {grad.device}")


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
    _check_grads(x, h0, c0, grad_out, grad_h, grad_c)
    cell_ = get_cell(cell)
    with _autograd_enabled_inside_an_op():
        grads = _recomputed_gradients(cell_, tensors, lengths, reverse, backend,
                                      (grad_out, grad_h, grad_c if cell_.has_cell_state else None))
    result = [x.new_empty((0,)) if t is None else g for t, g in zip(tensors, grads)]
    return _fresh(result, (*tensors, lengths, grad_out, grad_h, grad_c))


def _recomputed_gradients(cell: Cell, tensors, lengths, reverse, backend, grads):
    """Gradients of ``tensors`` (None where absent) by running the layer again on the chosen
    backend with autograd on (inside an operator: under :func:`_autograd_enabled_inside_an_op`)."""
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
        out, h, c = backends.run_layer(cell, *leaves, lengths, reverse, backend)
        outputs = [out, h] + ([c] if c is not None else [])
        wrt = [t for t in leaves if t is not None]
        found = iter(torch.autograd.grad(outputs, wrt, list(grads[:len(outputs)]), allow_unused=True))
    result = []
    for t in leaves:
        g = None if t is None else next(found)
        result.append(None if t is None else (torch.zeros_like(t) if g is None else g.detach()))
    return result


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


# ------------------------------------------------------------------------------ training form


def _train_forward(cell: Cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                   backend: str):
    """-> (out, h_T, c_T or None, workspace) on the backend ``backend`` selects: its training
    form where it has one for the problem, else its plain forward with an empty workspace (its
    backward then recomputes)."""
    problem = backends.layer_problem(cell, x, weight_hh, weight_hr, bias_ih is not None, lengths is not None)
    chosen = backends.choose(problem, backend)
    if chosen.train_forward is not None and chosen.train_supported(problem) is None:
        return backends.resolve(chosen.train_forward)(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                                                      lengths, reverse)
    out, h, c = chosen.layer_runner()(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                      reverse)
    return out, h, c, x.new_empty((0,), dtype=torch.float32)


def _train_backward(cell: Cell, tensors, lengths, reverse, backend: str, out, workspace, grads):
    """Gradients of ``tensors`` = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) (None where absent)
    from what :func:`_train_forward` returned, on the backend it ran (the same decision again)."""
    x, weight_hh, weight_hr = tensors[0], tensors[4], tensors[7]
    problem = backends.layer_problem(cell, x, weight_hh, weight_hr, tensors[5] is not None, lengths is not None)
    chosen = backends.choose(problem, backend)
    if chosen.train_forward is not None and chosen.train_supported(problem) is None:
        found = backends.resolve(chosen.train_backward)(cell, tensors[:7], lengths, reverse, out, workspace, *grads)
        return (*found, None)
    return _recomputed_gradients(cell, tensors, lengths, reverse, backend, grads)


@torch.library.custom_op("fastrnn::rnn_layer_train", mutates_args=())
def rnn_layer_train_op(
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
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``rnn_layer`` plus a 1-D ``workspace``: what the chosen backend's backward needs beyond the
    inputs and outputs (see the module docstring)."""
    check_op_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend)
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths)
    out, h, c, workspace = _train_forward(get_cell(cell), *tensors, reverse, backend)
    if c is None:
        c = x.new_empty((0,))
    return tuple(_fresh((out, h, c, workspace), tensors))


@rnn_layer_train_op.register_fake
def _rnn_layer_train_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                          backend):
    out, h, c = _rnn_layer_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                                backend)
    # The workspace's size is the chosen backend's business (a kernel's saved activations, or
    # nothing): a size the graph learns when the operator runs.
    return out, h, c, x.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.float32)


@torch.library.custom_op("fastrnn::rnn_layer_train_backward", mutates_args=())
def rnn_layer_train_backward_op(
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
    out: Tensor,
    workspace: Tensor,
    grad_out: Tensor,
    grad_h: Tensor,
    grad_c: Tensor,
) -> List[Tensor]:
    """Gradients of (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) (empty for an absent input) from
    the ``out`` and ``workspace`` of ``rnn_layer_train`` on the same arguments."""
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    check_op_args(cell, *tensors, lengths, reverse, backend)
    _check_grads(x, h0, c0, grad_out, grad_h, grad_c)
    if tuple(out.shape) != tuple(grad_out.shape) or out.dtype != x.dtype or workspace.dim() != 1 \
            or workspace.dtype != torch.float32:
        raise RuntimeError(f"out must be a {x.dtype} tensor of shape {tuple(grad_out.shape)} and workspace a 1-D float32 "
                           f"tensor, got {out.dtype} of shape {tuple(out.shape)} and workspace {workspace.dtype} of "
                           f"shape {tuple(workspace.shape)}")
    cell_ = get_cell(cell)
    with _autograd_enabled_inside_an_op():  # a backend may differentiate a graph (recompute, empty problems)
        grads = _train_backward(cell_, tensors, lengths, reverse, backend, out, workspace,
                                (grad_out, grad_h, grad_c if cell_.has_cell_state else None))
    result = [x.new_empty((0,)) if t is None else g.detach() for t, g in zip(tensors, grads)]
    return _fresh(result, (*tensors, lengths, out, workspace, grad_out, grad_h, grad_c))


@rnn_layer_train_backward_op.register_fake
def _rnn_layer_train_backward_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                   reverse, backend, out, workspace, grad_out, grad_h, grad_c):
    return _rnn_layer_backward_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                    reverse, backend, grad_out, grad_h, grad_c)


def _setup_train_context(ctx, inputs, output):
    cell, *tensors, lengths, reverse, backend = inputs
    ctx.cell, ctx.reverse, ctx.backend = cell, reverse, backend
    ctx.save_for_backward(*tensors, lengths, output[0], output[3])


def _train_op_backward(ctx, grad_out, grad_h, grad_c, grad_workspace):
    *tensors, lengths, out, workspace = ctx.saved_tensors
    grads = rnn_layer_train_backward_op(ctx.cell, *tensors, lengths, ctx.reverse, ctx.backend, out, workspace,
                                        grad_out, grad_h, grad_c)
    grads = [None if t is None else g for t, g in zip(tensors, grads)]
    return (None, *grads, None, None, None)


rnn_layer_train_op.register_autograd(_train_op_backward, setup_context=_setup_train_context)
rnn_layer_train_backward_op.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


def _compiled_training(tensors) -> bool:
    """Whether torch.compile (not torch.export) records a layer whose backward may follow."""
    if not torch.compiler.is_compiling() or torch.compiler.is_exporting() or not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


_onnx.register_legacy_symbolic()  # torch.onnx.export(dynamo=False) of fastrnn::rnn_layer


def rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    """The operator with fastrnn.functional.rnn_layer's return convention (c_T None without a
    cell state); ONNX's own recurrent operator instead while the dynamo ONNX exporter traces."""
    if _onnx.exporting():
        return _onnx.symbolic_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                    reverse)
    if _compiled_training((x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)):
        out, h, c, _ = rnn_layer_train_op(cell.name, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                          lengths, reverse, backend)
    else:
        out, h, c = rnn_layer_op(cell.name, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                 reverse, backend)
    return out, h, (c if cell.has_cell_state else None)
