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

Autograd. A compiled training step (torch.compile with autograd recording and an input that
wants a gradient) records ``fastrnn::rnn_layer_recorded`` instead: its implementation runs the
chosen backend with autograd on, exactly as eager mode runs it (each backend's own saved
activations: the kernel backends' buffers, oneDNN's workspace, the per-step graph of torch's GRU),
and keeps that graph in this process under a handle, an extra int64 output that AOTAutograd saves
for the backward; ``fastrnn::rnn_layer_recorded_backward`` takes the graph by its handle and
differentiates it. A backend with a training form (``Backend.training``, a
:class:`fastrnn.fused.TrainingForm`: the fused kernel backends cpu, triton, cuda) records no
graph: its forward kernel runs directly and the record keeps ``out`` and the kernel's saved
activations (a 1-D float32 workspace), from which the backward operator calls the backward kernel
and the weight GEMMs directly: no nested autograd call. (Not as operator outputs, as issue 21
suggested: a workspace whose size only the backend knows is an unbacked size to the tracer, and
torch 2.11's AOTAutograd then compiles the backward lazily and refuses ``retain_graph=True`` for
every compiled fastrnn model, whatever its backend.) What a record keeps is never memory the
operator returns (:func:`_owned_copies`: Inductor reuses a dead output's memory). So each layer-direction's forward runs once, on the same backend as eager
mode, and the backend is still chosen when the operator runs. A graph lives as long as its handle
(freed with the autograd graph of the compiled step when no backward comes) and is used once: a
second backward through a retained graph, or a handle that does not belong to the given inputs,
recomputes as below (right answers, never another call's graph).

Everywhere else (torch.export, whose programs must run on any machine and process; jit.trace;
inference) the operator is ``fastrnn::rnn_layer``, whose backward ``fastrnn::rnn_layer_backward``
recomputes the layer with autograd on (the chosen backend's own forward and backward) and
returns the gradients of every tensor input: right for every backend, at the price of a second
forward. The backward operators are not themselves differentiable (double backward through them
raises; torch.compile refuses double backward anyway); double backward works in eager mode, which
never uses these operators (:mod:`fastrnn.tracing`).
"""

from __future__ import annotations

import itertools
import weakref
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from . import backends, onnx as _onnx
from .cells import get_cell
from .layer_checks import check_op_args
from .tracing import compiling, exporting

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


# Every autograd dispatch key (one per device type, and their aliases) and ADInplaceOrView (views
# and in-place version counters): the keys an operator's implementation runs below.
_AUTOGRAD_KEYS = [key for name, key in torch._C.DispatchKey.__members__.items()
                  if name.startswith("Autograd") or name == "ADInplaceOrView"]


def _autograd_enabled_inside_an_op():
    """A guard that lets autograd record inside an operator's implementation.

    The dispatcher runs an implementation below the autograd keys (they are in the thread's
    exclude set), so ``torch.enable_grad()`` alone records nothing there; this lifts the
    autograd keys of every device from the exclude set, for the graphs that
    ``rnn_layer_recorded`` keeps and ``rnn_layer_backward`` recomputes.
    """
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in _AUTOGRAD_KEYS:
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def _check_grads(x, h0, c0, grad_out, grad_h, grad_c) -> None:
    """The output gradients a backward operator is given match the layer's outputs."""
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


# ------------------------------------------------------------------ compiled training: no recompute


class _Recorded(NamedTuple):
    """A layer-direction's autograd graph, as eager mode would have recorded it; or, for a backend
    with a training form (``trained``: its name), what that backend's backward needs: the call's
    ``out`` and the ``workspace`` its forward saved, and no graph."""

    key: tuple  # _call_key of the call it belongs to
    leaves: Optional[list]  # detached inputs the graph starts from (None where absent)
    outputs: Optional[list]  # out, h_T[, c_T] of the graph; for a training form, [out, workspace]
    wanted: list  # indices into leaves of the inputs whose gradients are wanted
    trained: Optional[str] = None  # the backend whose training form ran (then leaves is None)


# Graphs kept by rnn_layer_recorded until their backward takes them or their handle is freed.
_RECORDED: Dict[int, _Recorded] = {}
_HANDLES = itertools.count(1)  # (next() is atomic in CPython: threads get distinct handles)


def _call_key(cell, reverse, backend, tensors) -> tuple:
    """What identifies a call's inputs: the very tensors (memory, layout, dtype, device), so that a
    graph is never used for other inputs than those it was recorded for."""
    return (cell, reverse, backend, tuple(None if t is None else (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype,
                                                                  t.device) for t in tensors))


def _wanted_mask(requires_grad: List[bool]) -> List[bool]:
    if len(requires_grad) != 8:
        raise RuntimeError(f"requires_grad must give one flag for each of (x, h0, c0, weight_ih, weight_hh, "
                           f"bias_ih, bias_hh, weight_hr), got {len(requires_grad)} flags")
    return [bool(flag) for flag in requires_grad]


@torch.library.custom_op("fastrnn::rnn_layer_recorded", mutates_args=())
def rnn_layer_recorded_op(
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
    requires_grad: List[bool],
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``rnn_layer`` for a compiled training step: (out, h_T, c_T, handle).

    A chosen backend with a training form (``Backend.training``: the fused kernel backends)
    runs it: no autograd graph; what its backward needs beyond the inputs and outputs (its
    kernel's saved activations) is kept. Any other backend runs with autograd recording, exactly
    as in eager mode (its own saved activations: oneDNN's workspace, torch's per-step graph), for
    the inputs ``requires_grad`` flags (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), and its graph is
    kept. Either stays in this process under ``handle``, an int64 scalar on the CPU, until the
    backward operator takes it or the handle tensor is freed (a forward whose backward never runs).
    """
    check_op_args(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend)
    mask = _wanted_mask(requires_grad)
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    trained = _training_form(get_cell(cell), tensors, lengths, backend)
    if trained is not None:
        return _run_training_form(*trained, cell, tensors, lengths, reverse, backend, mask)
    with _autograd_enabled_inside_an_op(), torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_(flag) for t, flag in zip(tensors, mask)]
        out, h, c = backends.run_layer(get_cell(cell), *leaves, lengths, reverse, backend)
    outputs = [out, h] if c is None else [out, h, c]
    handle = next(_HANDLES)
    handle_tensor = torch.tensor(handle, dtype=torch.int64)
    wanted = [k for k, t in enumerate(leaves) if t is not None and t.requires_grad]
    if wanted and any(o.requires_grad for o in outputs):
        _RECORDED[handle] = _Recorded(_call_key(cell, reverse, backend, (*tensors, lengths)), leaves, outputs,
                                     wanted)
        weakref.finalize(handle_tensor, _RECORDED.pop, handle, None)
    if c is None:
        c = x.new_empty((0,))
    fresh = _owned_copies((out, h, c)) if handle in _RECORDED else _fresh([out, h, c], (*tensors, lengths))
    return fresh[0], fresh[1], fresh[2], handle_tensor


def _owned_copies(tensors) -> list:
    """Copies of the outputs a kept record may hold (a graph's saved tensors, a training form's
    ``out``): Inductor treats an operator's outputs as its own buffers and reuses the memory of one
    the graph no longer reads for a later result, which would overwrite what the backward reads."""
    return [t.detach().clone(memory_format=torch.contiguous_format) for t in tensors]


def _training_form(cell, tensors, lengths, backend: str):
    """(the backend ``backend`` selects for this layer, its training form) when it has one that
    runs this problem, else None."""
    x, weight_hh, bias_ih, weight_hr = tensors[0], tensors[4], tensors[5], tensors[7]
    problem = backends.layer_problem(cell, x, weight_hh, weight_hr, bias_ih is not None, lengths is not None)
    chosen = backends.choose(problem, backend)
    form = backends.resolve(chosen.training)
    if form is None or form.unsupported(problem) is not None:
        return None
    return chosen, form


def _run_training_form(chosen: backends.Backend, form, cell: str, tensors, lengths, reverse: bool, backend: str,
                       mask: List[bool]):
    """rnn_layer_recorded's outputs from ``chosen``'s training form ``form`` (see there)."""
    out, h, c, workspace = form.forward(get_cell(cell), *tensors[:7], lengths, reverse)
    handle = next(_HANDLES)
    handle_tensor = torch.tensor(handle, dtype=torch.int64)
    wanted = [k for k, t in enumerate(tensors) if t is not None and mask[k]]
    if c is None:
        c = tensors[0].new_empty((0,))
    out, h, c = _fresh([out, h, c], (*tensors, lengths))
    if wanted:
        _RECORDED[handle] = _Recorded(_call_key(cell, reverse, backend, (*tensors, lengths)), None, [out, workspace],
                                     wanted, chosen.name)
        weakref.finalize(handle_tensor, _RECORDED.pop, handle, None)
        (out,) = _owned_copies((out,))  # the record keeps the kernel's own out
    return out, h, c, handle_tensor


@rnn_layer_recorded_op.register_fake
def _rnn_layer_recorded_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                             backend, requires_grad):
    _wanted_mask(requires_grad)
    out, h, c = _rnn_layer_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                reverse, backend)
    return out, h, c, torch.empty((), dtype=torch.int64)


@torch.library.custom_op("fastrnn::rnn_layer_recorded_backward", mutates_args=())
def rnn_layer_recorded_backward_op(
    handle: Tensor,
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
    requires_grad: List[bool],
    grad_out: Tensor,
    grad_h: Tensor,
    grad_c: Tensor,
) -> List[Tensor]:
    """Gradients of the inputs flagged in ``requires_grad`` (empty for the others), from what
    ``rnn_layer_recorded`` kept under ``handle`` (taken: it is used once, as eager mode frees a
    graph): its graph, or, for a backend's training form, that backend's backward from the saved
    activations. Without a record (a second backward through a retained graph, a
    handle from another call or process), by recomputing the layer as ``rnn_layer_backward`` does."""
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    mask = _wanted_mask(requires_grad)
    if handle.dtype != torch.int64 or handle.numel() != 1 or handle.device.type != "cpu":
        raise RuntimeError(f"handle must be the int64 CPU scalar rnn_layer_recorded returned, got a "
                           f"{handle.dtype} tensor of shape {tuple(handle.shape)} on {handle.device}")
    recorded = _RECORDED.pop(int(handle), None)
    expected = [k for k, t in enumerate(tensors) if t is not None and mask[k]]
    if recorded is None or recorded.key != _call_key(cell, reverse, backend, (*tensors, lengths)) or recorded.wanted != expected:
        # (rnn_layer_backward checks every argument; a recorded call's were checked when it ran)
        grads = rnn_layer_backward_op(cell, *tensors, lengths, reverse, backend, grad_out, grad_h, grad_c)
        return _fresh([g if k in expected else x.new_empty((0,)) for k, g in enumerate(grads)],
                      (*tensors, lengths, grad_out, grad_h, grad_c))
    _check_grads(x, h0, c0, grad_out, grad_h, grad_c)
    if recorded.trained is not None:
        return _training_form_backward(recorded, cell, tensors, lengths, reverse, grad_out, grad_h, grad_c)
    outputs, grads = recorded.outputs, [grad_out, grad_h, grad_c][: len(recorded.outputs)]
    with _autograd_enabled_inside_an_op(), torch.enable_grad():
        found = torch.autograd.grad(outputs, [recorded.leaves[k] for k in expected], grads, allow_unused=True)
    result = [x.new_empty((0,)) for _ in tensors]
    for k, g in zip(expected, found):
        result[k] = torch.zeros_like(tensors[k]) if g is None else g.detach()
    return _fresh(result, (*tensors, lengths, grad_out, grad_h, grad_c))


def _training_form_backward(recorded: _Recorded, cell: str, tensors, lengths, reverse: bool, grad_out, grad_h,
                            grad_c) -> List[Tensor]:
    """The recorded backend's training-form backward from the call's ``out`` and ``workspace``
    (kept with the record: as operator outputs, a workspace of a size only the backend knows is an
    unbacked size, with which torch 2.11's AOTAutograd compiles the backward lazily and then
    refuses ``retain_graph=True``)."""
    x = tensors[0]
    out, workspace = recorded.outputs
    cell_ = get_cell(cell)
    needs = [k in recorded.wanted for k in range(7)]
    found = backends.resolve(backends.get_backend(recorded.trained).training).backward(
        cell_, tensors[:7], lengths, reverse, out, workspace, grad_out, grad_h, grad_c if cell_.has_cell_state else None,
        needs)
    result = [x.new_empty((0,)) for _ in tensors]
    for k in recorded.wanted:
        result[k] = found[k].detach()
    return _fresh(result, (*tensors, lengths, out, workspace, grad_out, grad_h, grad_c))


@rnn_layer_recorded_backward_op.register_fake
def _rnn_layer_recorded_backward_fake(handle, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                      lengths, reverse, backend, requires_grad, grad_out, grad_h, grad_c):
    mask = _wanted_mask(requires_grad)
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    return [torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None and mask[k]
            else x.new_empty((0,)) for k, t in enumerate(tensors)]


def _recorded_setup_context(ctx, inputs, output):
    cell, *tensors, lengths, reverse, backend, requires_grad = inputs
    ctx.cell, ctx.reverse, ctx.backend, ctx.flags = cell, reverse, backend, requires_grad
    ctx.save_for_backward(*tensors, lengths, output[3])


def _recorded_backward(ctx, grad_out, grad_h, grad_c, grad_handle):
    *tensors, lengths, handle = ctx.saved_tensors
    grads = rnn_layer_recorded_backward_op(handle, ctx.cell, *tensors, lengths, ctx.reverse, ctx.backend,
                                           ctx.flags, grad_out, grad_h, grad_c)
    grads = [g if t is not None and flag else None for t, g, flag in zip(tensors, grads, ctx.flags)]
    return (None, *grads, None, None, None, None)


rnn_layer_recorded_op.register_autograd(_recorded_backward, setup_context=_recorded_setup_context)
rnn_layer_recorded_backward_op.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


def _records_training(tensors) -> bool:
    """Whether a traced call is part of a compiled training step: under torch.compile (not
    torch.export, whose programs must run anywhere: they keep the recompute), with autograd
    recording and an input that wants a gradient."""
    return (torch.is_grad_enabled() and not exporting()
            and any(t is not None and t.requires_grad for t in tensors))


_onnx.register_legacy_symbolic()  # torch.onnx.export(dynamo=False) of fastrnn::rnn_layer


def rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse, backend):
    """The operator with fastrnn.functional.rnn_layer's return convention (c_T None without a
    cell state); ONNX's own recurrent operator instead while the dynamo ONNX exporter traces."""
    if _onnx.exporting():
        return _onnx.symbolic_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths,
                                    reverse)
    tensors = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    if compiling() and _records_training(tensors):
        flags = [t is not None and t.requires_grad for t in tensors]
        out, h, c, _ = rnn_layer_recorded_op(cell.name, *tensors, lengths, reverse, backend, flags)
    else:
        out, h, c = rnn_layer_op(cell.name, *tensors, lengths, reverse, backend)
    return out, h, (c if cell.has_cell_state else None)
