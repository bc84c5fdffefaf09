"""Backend ``"torch"``: torch's own recurrent kernels, exactly what torch.nn would run.

``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` / ``rnn_relu`` and their ``*_cell`` twins are what
``torch.nn.LSTM`` and friends call: oneDNN or ATen on the CPU, cuDNN on a GPU. A module on this
backend makes ONE such call for its whole stack (all layers and directions, dropout between
layers, PackedSequence as torch.nn passes it), so it runs at torch.nn's speed with torch.nn's
numbers and dropout masks. ``backend="auto"`` takes it ahead of the reference wherever no
fastrnn kernel is measured faster (see :mod:`fastrnn.backends`).

Where torch would fail or be wrong, :func:`unsupported` says so and ``auto`` falls through to the
reference, so fastrnn keeps what it has over torch.nn. Found so far (devices in
:data:`CUDNN_DEVICE_TYPES`, i.e. where torch runs cuDNN):

- more than 65,535 steps: cuDNN fails;
- batch 0: not verified on cuDNN (the reference costs nothing there);
- backward of a module in eval mode: cuDNN's backward refuses an inference-mode forward. This is
  decided by the forward, not refused: when autograd records the call, it runs in training mode
  with dropout 0 (same outputs), so a later backward works, as on the reference;
- double backward: cuDNN's backward is not differentiable, and whether a gradient of the
  gradient is wanted is not known at forward time. The inputs pass through
  :class:`_CudnnBackwardNotDifferentiable`, so that such a gradient raises a
  :class:`~fastrnn.BackendError` naming the way out (``backend="reference"``) instead of an
  error from deep inside autograd. ``explain_backend`` notes it.

On the CPU torch's kernels have none of these limits (double backward included: tested).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .backends import Backend, BackendError, LayerProblem, register_backend
from .autocast import autocast_dtype, cast
from .tracing import compiling

# Device types on which torch's recurrent layers run cuDNN, with its limits. Tests add "cpu" to
# simulate a GPU: every decision below is a function of the problem and this set.
CUDNN_DEVICE_TYPES = {"cuda"}
CUDNN_MAX_STEPS = 65535

_STACK = {"RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu, "LSTM": _VF.lstm, "GRU": _VF.gru}
_CELL = {"RNN_TANH": _VF.rnn_tanh_cell, "RNN_RELU": _VF.rnn_relu_cell, "LSTM": _VF.lstm_cell, "GRU": _VF.gru_cell}

_WAY_OUT = "run this module with backend='reference' (fastrnn.use_backend('reference'))"


def unsupported(problem: LayerProblem) -> Optional[str]:
    if compiling():
        # torch.nn's RNNs are not compiled either: TorchDynamo refuses them, and inductor fails on
        # the CPU kernel (aten.mkldnn_rnn_layer). Compiled layers run fastrnn's other backends.
        # jit.trace is not refused: it records torch's op as it records torch.nn's (aten::lstm).
        return "torch.compile / torch.export is tracing: torch's recurrent kernels do not compile"
    if problem.cell.mode not in _STACK:
        return f"torch has no kernel for cell {problem.cell.name!r}"
    if problem.device.type in CUDNN_DEVICE_TYPES:
        if problem.seq_len > CUDNN_MAX_STEPS:
            return f"cuDNN fails on sequences longer than {CUDNN_MAX_STEPS:,} steps (got {problem.seq_len:,})"
        if problem.batch_size == 0:
            return "batch 0 is not verified on cuDNN"
    return None


def note(problem: LayerProblem) -> Optional[str]:
    if problem.device.type in CUDNN_DEVICE_TYPES:
        return f"cuDNN's backward is not differentiable: double backward raises; {_WAY_OUT}"
    return None


# ------------------------------------------------------------------------------ cuDNN's limits


class _CudnnBackwardNotDifferentiable(torch.autograd.Function):
    """Identity on a call's inputs. When the backward itself is recorded (create_graph=True), the
    gradients it passes on are marked so that differentiating them raises a clear error."""

    @staticmethod
    def forward(ctx, *tensors):
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        if not torch.is_grad_enabled():
            return grads
        return tuple(None if g is None else _RaiseWhenDifferentiated.apply(g) for g in grads)


class _RaiseWhenDifferentiated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad):
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, grad_grad):
        raise BackendError(
            "double backward through fastrnn backend 'torch' (cuDNN) is not supported: cuDNN's RNN "
            f"backward is not differentiable; {_WAY_OUT}"
        )


def _cudnn_inputs(tensors: Sequence[Optional[Tensor]], training: bool):
    """-> (tensors, train flag) for a call on ``tensors[0]``'s device (see the module docstring)."""
    if tensors[0].device.type not in CUDNN_DEVICE_TYPES:
        return tensors, training
    present = [t for t in tensors if t is not None]
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in present)):
        return list(tensors), training
    guarded = iter(_CudnnBackwardNotDifferentiable.apply(*present))
    return [None if t is None else next(guarded) for t in tensors], True


# ------------------------------------------------------------------------------ whole module


def run_module(module, input, hx, batched: bool, run_layer=None):
    """A fastrnn RNN/LSTM/GRU ``module``'s forward as torch.nn's forward runs it: one call.

    ``input`` and ``hx`` are what the user passed, already checked by the module (as torch.nn
    checks them); returns (output, h_n) or (output, (h_n, c_n)) exactly as torch.nn does.
    ``run_layer`` (the signature of every ``run_module``, :func:`fastrnn.layer_stack.run_module`)
    is not used: torch's kernel runs the whole stack.
    """
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    if packed:
        batch = int(input.batch_sizes[0]) if len(input.batch_sizes) else 0
    else:
        batch = data.shape[0 if module.batch_first else 1] if batched else 1
    h0, c0 = module._initial_state(batch, data, hx, packed, batched)
    if packed and hx is not None and input.sorted_indices is not None:
        # Each row of the given state belongs to the sequence the user put there (torch.nn's
        # permute_hidden): bring the states into the packed (sorted) order.
        h0 = h0.index_select(1, input.sorted_indices)
        c0 = c0.index_select(1, input.sorted_indices) if c0 is not None else None
    weights = module._flat_weights
    cell = module.cell
    lstm = cell.has_cell_state

    dtype = autocast_dtype(data) if torch._C._is_any_autocast_enabled() else None
    if dtype is not None:  # fastrnn's autocast rule: the whole layer in the autocast dtype
        data, h0, c0 = cast(data, dtype), cast(h0, dtype), cast(c0, dtype)
        weights = [cast(w, dtype) for w in weights]
    train = module.training
    # (the CPU first, without device.type, which builds a string: a few percent of a batch-1 step)
    if (not data.is_cpu or "cpu" in CUDNN_DEVICE_TYPES) and data.device.type in CUDNN_DEVICE_TYPES:
        tensors, train = _cudnn_inputs([data, h0, c0] + weights, train)
        data, h0, c0, weights = tensors[0], tensors[1], tensors[2], tensors[3:]
    dropout = module.dropout if module.training else 0.0
    hidden = (h0, c0) if lstm else h0
    if not batched:
        data = data.unsqueeze(0 if module.batch_first else 1)

    fn = _STACK[cell.mode]
    if packed:
        args = (data, input.batch_sizes, hidden, weights, module.bias, module.num_layers, dropout,
                train, module.bidirectional)
    else:
        args = (data, hidden, weights, module.bias, module.num_layers, dropout, train,
                module.bidirectional, module.batch_first)
    if dtype is None:
        result = fn(*args)
    else:
        with torch.autocast(data.device.type, enabled=False):
            result = fn(*args)
    output, states = result[0], list(result[1:])
    if packed:
        if input.unsorted_indices is not None:
            states = [s.index_select(1, input.unsorted_indices) for s in states]
        output = PackedSequence(output, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
    elif not batched:
        output = output.squeeze(0 if module.batch_first else 1)
        states = [s.squeeze(1) for s in states]
    return output, (tuple(states) if lstm else states[0])


# ------------------------------------------------------------------------------ one cell step


def run_cell(module, x: Tensor, states):
    """One step of cell ``module`` on torch's cell kernel (what torch.nn's cells call).

    x (B, I) and states, a tuple (h,) or (h, c), batched and checked by the module; returns the
    new states as a tuple. Under autocast the step runs in the autocast dtype (fastrnn's rule).
    """
    if x.is_cpu and "cpu" not in CUDNN_DEVICE_TYPES and not torch._C._is_any_autocast_enabled():
        # The common step, as torch.nn's cells make it: one call, nothing else (a batch-1 step
        # is a few microseconds, and each line of Python here is a few percent of it). The
        # weights straight from _parameters (Module.__getattr__ is a Python call per weight);
        # a parametrized weight, a plain tensor set by weight-drop code or no bias: by name.
        params = module._parameters
        w_ih, w_hh = params.get("weight_ih"), params.get("weight_hh")
        b_ih, b_hh = params.get("bias_ih"), params.get("bias_hh")
        if w_ih is None or w_hh is None or b_ih is None or b_hh is None:
            w_ih, w_hh, b_ih, b_hh = module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh
        if len(states) == 2:  # (torch's lstm_cell returns the tuple (h, c))
            return _CELL[module.mode](x, states, w_ih, w_hh, b_ih, b_hh)
        return (_CELL[module.mode](x, states[0], w_ih, w_hh, b_ih, b_hh),)
    cell = module.cell
    tensors = [x, *states, module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh]
    dtype = autocast_dtype(x)
    if dtype is not None:
        tensors = [cast(t, dtype) for t in tensors]
    if x.device.type in CUDNN_DEVICE_TYPES:
        tensors, _ = _cudnn_inputs(tensors, False)
    n = len(states)
    hx = tuple(tensors[1:1 + n]) if cell.has_cell_state else tensors[1]
    args = (tensors[0], hx, *tensors[1 + n:])
    if dtype is None:
        out = _CELL[cell.mode](*args)
    else:
        with torch.autocast(x.device.type, enabled=False):
            out = _CELL[cell.mode](*args)
    return tuple(out) if cell.has_cell_state else (out,)


# ------------------------------------------------------------------------------ one layer-direction


def _reversal(lengths: Optional[Tensor], seq_len: int, batch: int, device) -> Tensor:
    """(T, B) step indices that reverse each sequence within its length (an involution):
    step t of sequence b maps to lengths[b] - 1 - t while t < lengths[b], else to itself."""
    steps = torch.arange(seq_len, device=device)[:, None].expand(seq_len, batch)
    if lengths is None:
        return seq_len - 1 - steps
    lengths = lengths.to(device)[None, :]
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


def torch_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
    """One layer-direction on torch's kernels (signature of ``reference_layer``).

    Used where a layer runs on its own (``fastrnn.functional``, traced layers); modules run their
    whole stack with :func:`run_module` instead. Lengths become a PackedSequence (a sequence of
    length 0 runs one step whose result is discarded); the reverse direction reverses each
    sequence within its length, runs forward and reverses the output back.
    """
    seq_len, batch = x.shape[0], x.shape[1]
    has_bias = bias_ih is not None
    weights = [weight_ih, weight_hh] + ([bias_ih, bias_hh] if has_bias else [])
    weights += [weight_hr] if weight_hr is not None else []
    tensors, train = _cudnn_inputs([x, h0, c0] + weights, False)
    x, h0, c0, weights = tensors[0], tensors[1], tensors[2], tensors[3:]
    fn = _STACK[cell.mode]
    if reverse:
        order = _reversal(lengths, seq_len, batch, x.device)
        x = x.gather(0, order[:, :, None].expand_as(x))
    hidden = (h0[None], c0[None]) if cell.has_cell_state else h0[None]
    if lengths is None:
        result = fn(x, hidden, weights, has_bias, 1, 0.0, train, False, False)
        out, states = result[0], [s[0] for s in result[1:]]
    else:
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), enforce_sorted=False)
        order_in = packed.sorted_indices
        hidden = tuple(s.index_select(1, order_in) for s in hidden) if cell.has_cell_state else hidden.index_select(1, order_in)
        result = fn(packed.data, packed.batch_sizes, hidden, weights, has_bias, 1, 0.0, train, False)
        out, _ = pad_packed_sequence(
            PackedSequence(result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
            total_length=seq_len,
        )
        states = [s[0].index_select(0, packed.unsorted_indices) for s in result[1:]]
        empty = (lengths == 0).to(x.device)
        if bool(empty.any()):  # length 0: no step runs; the state passes through, no output
            out = out.masked_fill(empty[None, :, None], 0)
            initial = (h0, c0) if cell.has_cell_state else (h0,)
            states = [torch.where(empty[:, None], s0, s) for s0, s in zip(initial, states)]
    if reverse:
        out = out.gather(0, order[:, :, None].expand_as(out))
    h_n = states[0]
    return out, h_n, (states[1] if cell.has_cell_state else None)


register_backend(
    Backend(
        name="torch",
        priority=5,  # after fastrnn's kernels (admitted where measured faster), before the reference
        run_layer=torch_layer,
        unsupported=unsupported,
        run_module=run_module,
        run_cell=run_cell,
        note=note,
    )
)
