"""Drop-in replacements for torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU.

Constructor arguments, parameter names, shapes, registration order, initialisation, forward
signature, outputs and errors follow torch.nn, so ``state_dict``s load both ways and, with the
same seed, a fastrnn module starts from the same weights as its torch.nn twin. The one addition
is ``backend=`` (see :mod:`fastrnn.backends`).

These classes deliberately do not subclass ``torch.nn.RNNBase``: TorchDynamo breaks the graph on
every instance of it. (``flatten_parameters`` is torch.nn's own, for the ``torch`` backend's
cuDNN call.)

A forward pass checks the input as torch.nn does, decides once which backend runs it
(:func:`fastrnn.backends.choose`) and runs that backend's ``run_module``: by default the generic
stack of :mod:`fastrnn.layer_stack` (layers x directions through the backend's ``run_layer``,
dropout between layers in training mode), for backend ``torch`` one call of torch's kernels.
While a tracer records it, the generic stack runs with one operator per layer-direction
(:mod:`fastrnn.ops`), each deciding its backend when it runs.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import List

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .. import backends, layer_stack, onnx, ops
from ..backends import LayerProblem
from ..cells import cell_of
from ..packing import check_packed
from ..tracing import compiling, tracing
from .state_checks import StateError, check_module_state, check_weights, sizes_of, weight_names, weight_shapes

# torch.jit.is_tracing() less its TorchScript branch (a module's forward is not scripted): every step asks
_jit_tracing = torch._C._is_tracing


class RNNBase(nn.Module):
    """Shared constructor, parameters and forward of RNN, LSTM and GRU."""

    # Instances hold plain data only (mode, sizes, flags, the backend name): the Cell is
    # derived from ``mode``, so whole-module pickles load with torch.load(weights_only=True).
    cell = property(cell_of, doc="The :class:`fastrnn.cells.Cell` this module runs (from ``mode``).")
    backend = backends.AUTO  # class default: what fastrnn's forward sees on torch.nn modules under patch()
    # (``qconfig`` is set up from above, by fastrnn.quantization.install())

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout) if isinstance(dropout, numbers.Number) else dropout
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backends.check_backend_name(backend)
        _check_constructor_args(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)

        factory = {"device": device, "dtype": dtype}
        shapes = weight_shapes(mode, input_size, hidden_size, num_layers, bidirectional, bias, proj_size)
        self._all_weights: List[List[str]] = weight_names(num_layers, bidirectional, [list(s) for s in shapes])
        for names, per_direction in zip(self._all_weights, shapes):
            for name, shape in zip(names, per_direction.values()):
                self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()
        self.flatten_parameters()

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise StateError(f"{type(self).__name__}: a pickled module's state must be a dict, got {type(state).__name__}")
        state.pop("cell", None)  # pickles of earlier fastrnn versions hold the Cell
        super().__setstate__(state)
        check_module_state(self)  # what forward trusts (see state_checks), before anyone runs it

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _flat_weights_names(self) -> List[str]:
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> List[Optional[Tensor]]:
        """torch.nn's list of the weights in ``_flat_weights_names`` order, None for a weight that
        is not set (deleted, as weight-drop code and torch's own tests do before setting it
        again). Derived, never stored: a plain tensor assigned under a weight's name (AWD-LSTM's
        weight drop) is what it lists and what forward runs. Assigning the list itself raises
        (a read-only property): fastrnn's forward reads the weights by name, so an assigned list
        would be silently ignored."""
        # Straight from _parameters (getattr on a Module is slow, and every forward asks);
        # a parametrized weight or a plain tensor attribute is not in it: getattr finds those.
        params = self._parameters
        return [params[name] if name in params else getattr(self, name, None)
                for names in self._all_weights for name in names]  # (= _flat_weights_names, inline)

    @_flat_weights.setter
    def _flat_weights(self, value) -> None:
        raise AttributeError(
            "fastrnn: _flat_weights is derived from the weights by name and cannot be assigned; "
            "assign a weight instead, e.g. module.weight_hh_l0 = tensor (as weight-drop code does)"
        )

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, in registration order (as torch.nn)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """What torch.nn's does: on a GPU with cuDNN, put the weights in one contiguous buffer,
        the layout cuDNN reads (else the torch backend's cuDNN call copies them at every call);
        a no-op elsewhere. torch.nn's own method, which reads only attributes this class shares."""
        nn.RNNBase.flatten_parameters(self)

    def _apply(self, fn, recurse=True):
        # As torch.nn: after .to() / .cuda() / .half(), flatten the weights again.
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.backend != backends.AUTO:
            s += f", backend={self.backend!r}"
        return s

    # ----------------------------------------------------------------------------- forward

    def forward(self, input, hx=None):
        batched = self._check_forward_input(input)
        # torch.compile / export record one operator per layer-direction (ops.py), each choosing
        # its backend where the graph runs (and checking its weights against x and the state).
        # jit.trace decides here as in eager: on torch's kernels it records what torch.nn records
        # (aten::lstm, bit-identical to eager), else fastrnn's operators, one per layer-direction.
        if compiling():
            return layer_stack.run_module(self, input, hx, batched, self._traced_layer)
        # The weights against the sizes, on every backend: torch's CPU kernel (run_module) checks
        # none, and the others would run on weights the sizes do not describe.
        sizes = sizes_of(self)
        check_weights(self, self._flat_weights, sizes)
        if isinstance(input, PackedSequence):
            backend = backends.choose(self._problem(input, batched), self.backend)  # the one decision
        else:  # the one decision, by a tuple of what _problem reads: a batch-1 step costs as torch.nn's
            key = (sizes, self.batch_first, input.device, input.dtype, input.shape)
            backend = backends.choose_by_key(key, lambda: self._problem(input, batched), self.backend)
        run_layer = self._traced_layer if _jit_tracing() else backend.layer_runner()
        return backend.module_runner()(self, input, hx, batched, run_layer)

    def _traced_layer(self, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
        return ops.rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                             self.backend)

    def explain_backend(self, input, hx=None) -> backends.BackendChoice:
        """Which backend a forward on ``input`` would run, and why the others would not."""
        return backends.explain(self._problem(input, self._check_forward_input(input)), self.backend)

    def _problem(self, input, batched: bool) -> LayerProblem:
        """The first layer's problem, with the stack around it (what backends decide on)."""
        if isinstance(input, PackedSequence):
            data = input.data
            seq_len = len(input.batch_sizes)
            batch = int(input.batch_sizes[0]) if seq_len else 0
        else:
            data = input
            seq_len = input.shape[1 if self.batch_first else 0] if batched else input.shape[0]
            batch = input.shape[0 if self.batch_first else 1] if batched else 1
        return LayerProblem(
            cell=self.cell, device=data.device, dtype=data.dtype, input_size=self.input_size,
            hidden_size=self.hidden_size, proj_size=self.proj_size, batch_size=batch,
            seq_len=seq_len, has_bias=self.bias, has_lengths=isinstance(input, PackedSequence),
            num_layers=self.num_layers, bidirectional=self.bidirectional,
        )

    def _check_forward_input(self, input) -> bool:
        """torch.nn's checks of the input (type, rank, dtype, device, size); -> batched."""
        if isinstance(input, Tensor):  # (first: the per-step case)
            dim = input.dim()
            if dim != 3 and dim != 2:
                raise ValueError(f"{self._kind()}: Expected input to be 2D or 3D, got {dim}D instead")
            self._check_input(input, dim)
            return dim == 3
        if isinstance(input, PackedSequence):
            if torch.compiler.is_compiling() or torch.jit.is_tracing():
                onnx.check_packed_exportable()  # an ONNX exporter is tracing: a clear error
            check_packed(input)  # before anything reads batch_sizes, on every backend
            self._check_input(input.data, expected_dim=2)
            return True
        raise TypeError(f"{self._kind()}: input must be a Tensor or PackedSequence, got {type(input).__name__}")

    def _kind(self) -> str:
        """The class name torch.nn's errors give: RNN, LSTM or GRU."""
        return "RNN" if self.mode.startswith("RNN") else self.mode

    def _check_input(self, x: Tensor, expected_dim: int) -> None:
        weight = self._parameters.get("weight_ih_l0")  # (Module.__getattr__ costs more: every step asks)
        if weight is None:  # parametrized, or a plain tensor set by weight-drop code
            weight = self.weight_ih_l0
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})"
            )
        if x.device != weight.device:
            raise RuntimeError(
                f"Expected input on the module's device {weight.device}, got input on {x.device}. "
                f"Move one of them: input.to('{weight.device}') or model.to('{x.device}')"
            )
        if x.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {x.dim()}")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.size(-1)}"
            )

    def _initial_state(self, batch: int, x: Tensor, hx, packed: bool, batched: bool):
        """Validate hx as torch.nn does and return (h0, c0) of shape (layers*dirs, batch, *),
        zeros like ``x`` (dtype, device) when hx is None."""
        # (every step runs this: each line is a few percent of a batch-1 step)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h_shape = (layers, batch, self.proj_size if self.proj_size > 0 else self.hidden_size)
        lstm = self.cell.has_cell_state
        if hx is None:
            # torch.zeros as torch.nn writes it: jit.trace then records torch.nn's very nodes
            zeros = dict(dtype=x.dtype, device=x.device)
            c0 = torch.zeros((layers, batch, self.hidden_size), **zeros) if lstm else None
            return torch.zeros(h_shape, **zeros), c0
        if lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0) of two tensors, got {_describe(hx)}")
            h0, c0 = hx
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{self.mode}: hx must be a Tensor, got {_describe(hx)}")
            h0, c0 = hx, None
        if not packed:
            want = 3 if batched else 2
            if h0.dim() != want or (lstm and c0.dim() != want):
                kind = "batched 3-D" if batched else "unbatched 2-D"
                if lstm:
                    raise RuntimeError(
                        f"For {kind} input, hx and cx should also be {want}-D but got "
                        f"({h0.dim()}-D, {c0.dim()}-D) tensors"
                    )
                raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {h0.dim()}-D tensor")
            if not batched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
        elif h0.dim() == 3 and torch.compiler.is_compiling():
            # A traced PackedSequence without sorted_indices has a batch size known only as a value
            # (fastrnn/traced_packing.py); tell the tracer it equals hx's, checked at run time.
            torch._check(h0.shape[1] == batch)
        checks = ((("hidden[0]", h0, h_shape), ("hidden[1]", c0, (layers, batch, self.hidden_size))) if lstm
                  else (("hidden", h0, h_shape),))
        dtype, device = x.dtype, x.device
        for name, tensor, shape in checks:
            if tensor.shape != shape:  # (torch.Size equals the tuple of its sizes)
                raise RuntimeError(f"Expected {name} size {shape}, got {list(tensor.shape)}")
            if tensor.dtype != dtype and not torch.is_autocast_enabled(device.type):
                raise RuntimeError(f"Expected {name} with dtype {dtype} (the input's), got {tensor.dtype}")
            if tensor.device != device:
                raise RuntimeError(f"Expected {name} on device {device} (the input's), got {tensor.device}")
        return h0, c0


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a Tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _check_constructor_args(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
    """The checks, exception types and messages of torch.nn.RNNBase.__init__."""
    if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {dropout!r}"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
            stacklevel=4,
        )
    for name, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    # bool is an int for the sizes, as in torch.nn: LSTM(4, True) has hidden_size 1. Not for
    # num_layers: torch.nn accepts num_layers=True and then fails in every forward.
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if not isinstance(value, int) or (name == "num_layers" and isinstance(value, bool)):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero, got {value}")
    if not isinstance(proj_size, int) or isinstance(proj_size, bool):
        raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
    if proj_size < 0:
        raise ValueError(f"proj_size should be a positive integer or zero to disable projections, got {proj_size}")
    if proj_size >= hidden_size:
        raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} >= hidden_size={hidden_size}")


def _no_proj_size(kwargs: dict) -> None:
    if "proj_size" in kwargs:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")


class RNN(RNNBase):
    """Elman RNN, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, act = tanh or relu.

    Arguments as torch.nn.RNN: (input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None),
    plus ``backend='auto'``.
    """

    def __init__(self, *args, **kwargs):
        _no_proj_size(kwargs)
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")


class LSTM(RNNBase):
    """LSTM, gates (i, f, g, o): ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)`` (times W_hr
    with proj_size). Arguments as torch.nn.LSTM plus ``backend='auto'``."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """GRU, gates (r, z, n): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``,
    ``h_t = (1-z)*n + z*h_{t-1}``. Arguments as torch.nn.GRU plus ``backend='auto'``."""

    def __init__(self, *args, **kwargs):
        _no_proj_size(kwargs)
        super().__init__("GRU", *args, **kwargs)
