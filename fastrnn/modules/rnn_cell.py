"""Drop-in replacements for torch.nn.RNNCell, LSTMCell and GRUCell.

Same constructor (plus ``backend=``), parameters, initialisation, forward and errors as torch.nn.
A step decides its backend once (:func:`fastrnn.backends.choose`) and runs that backend's
``run_cell`` (backend ``torch``: torch's cell kernel) or, without one, its ``run_layer`` over a
layer of one time step, the seam the multi-step modules use too.

As torch.nn's cells: sizes may be 0 (a hidden size of 0 gives (B, 0) states), any integer type
is a size, ``bias`` is taken for its truth value. Deliberate differences: an unknown
``nonlinearity`` for RNNCell raises ValueError in the constructor (as torch.nn.RNN does) instead
of RuntimeError at the first forward; a negative or non-integer size raises a RuntimeError /
TypeError naming the argument (torch.nn's come from ``torch.empty``).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from .. import backends, ops
from ..autocast import run_in_autocast_dtype
from ..backends import LayerProblem
from ..cells import cell_of
from ..tracing import compiling, tracing
from .state_checks import StateError, check_cell_state


class RNNCellBase(nn.Module):
    # As fastrnn.RNNBase: instances hold plain data; the Cell is derived from ``mode``.
    cell = property(cell_of, doc="The :class:`fastrnn.cells.Cell` this cell runs (from ``mode``).")
    backend = backends.AUTO
    # (``qconfig`` is set up from above, by fastrnn.quantization.install())

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, device=None, dtype=None, *, backend="auto"):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
            if value < 0:
                raise RuntimeError(f"Trying to create tensor with negative dimension {value}: {name} must be >= 0")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = backends.check_backend_name(backend)
        factory = {"device": device, "dtype": dtype}
        gate_size = self.cell.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty((gate_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((gate_size, hidden_size), **factory))
        if bias:  # torch.nn takes any value for its truth, and keeps it as given
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise StateError(f"{type(self).__name__}: a pickled module's state must be a dict, got {type(state).__name__}")
        old_cell = state.pop("cell", None)  # pickles of earlier fastrnn versions hold the Cell
        if old_cell is not None:
            state.setdefault("mode", old_cell.mode)
        super().__setstate__(state)
        check_cell_state(self)  # what forward trusts (see state_checks), before anyone runs it

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, in registration order (as torch.nn)."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        if self.backend != backends.AUTO:
            s += f", backend={self.backend!r}"
        return s

    def _step(self, cls_name: str, input: Tensor, states, n_states: int):
        """Validate as torch.nn's cells do, run one step; ``states`` is a tuple of h (and c), or
        None for zeros; ``n_states``: how many the cell carries, 1 (h) or 2 (h, c), as the
        calling forward's signature says (a step asks nothing it can be told)."""
        if input.dim() not in (1, 2):
            raise ValueError(f"{cls_name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if compiling():  # compile/export: one operator for the step, deciding where it runs (ops.py)
            backend = run_cell = None
        else:  # the one decision of this call (jit.trace too: torch's cell kernel records as torch.nn's)
            device, batch = x.device, x.size(0)  # (not x.shape[0]: no torch.Size built)
            backend = backends.choose_by_key(  # a step costs what torch.nn's does: decide by a tuple
                (self.mode, self.input_size, self.hidden_size, self.bias, device, x.dtype, batch),
                lambda: LayerProblem(self.cell, device, x.dtype, self.input_size, self.hidden_size, 0,
                                     batch, 1, self.bias, False),  # a layer of one step
                self.backend,
            )
            run_cell = backend.run_cell  # (backend.cell_runner() inline: a call is a few percent of a step)
            if isinstance(run_cell, str):
                run_cell = backend.cell_runner()
        if run_cell is not None:
            # torch's own cell kernel, called as torch.nn's cells call it: torch checks the rest
            # (with torch.nn's errors, since they are torch.nn's).
            if states is None:
                # as torch.nn's cells write it: jit.trace then records torch.nn's very nodes
                zeros = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
                states = (zeros,) * n_states
            elif not batched:
                states = tuple(s.unsqueeze(0) for s in states)
            out = run_cell(self, x, states)
            return out if batched else tuple(t.squeeze(0) for t in out)
        if x.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {self.input_size}")
        if x.dtype != self.weight_ih.dtype and not torch.is_autocast_enabled(x.device.type):
            raise RuntimeError(f"input dtype ({x.dtype}) does not match weight dtype ({self.weight_ih.dtype})")
        if x.device != self.weight_ih.device:
            raise RuntimeError(f"Expected input on the module's device {self.weight_ih.device}, got {x.device}")
        if states is None:
            states = (x.new_zeros(x.size(0), self.hidden_size),) * n_states
        else:
            want = 2 if batched else 1
            for k, s in enumerate(states):
                if s.dim() != want:  # torch.nn: an IndexError, or a hidden_size error about the batch
                    kind = "batched 2-D" if batched else "unbatched 1-D"
                    raise RuntimeError(f"{cls_name}: for {kind} input, hidden{k} should also be {want}-D, "
                                       f"got {s.dim()}-D")
            states = tuple(s if batched else s.unsqueeze(0) for s in states)
            for k, s in enumerate(states):
                if s.size(0) != x.size(0):
                    raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{k} batch size {s.size(0)}")
                if s.size(1) != self.hidden_size:
                    raise RuntimeError(
                        f"hidden{k} has inconsistent hidden_size: got {s.size(1)}, expected {self.hidden_size}"
                    )
                if s.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                    raise RuntimeError(f"hidden{k} dtype ({s.dtype}) does not match input dtype ({x.dtype})")
                if s.device != x.device:
                    raise RuntimeError(f"hidden{k} is on device {s.device}, but input is on {x.device}")
        run_layer = self._traced_layer if backend is None or tracing() else backend.layer_runner()
        c0 = states[1] if self.cell.has_cell_state else None
        _, h, c = run_in_autocast_dtype(  # under autocast the step runs in the autocast dtype
            run_layer, self.cell, x.unsqueeze(0), states[0], c0, self.weight_ih, self.weight_hh,
            self.bias_ih, self.bias_hh, None, None, False,
        )
        out = (h, c) if self.cell.has_cell_state else (h,)
        return tuple(t if batched else t.squeeze(0) for t in out)

    def _traced_layer(self, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse):
        return ops.rnn_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
                             self.backend)

    @staticmethod
    def _check_hidden_dims(cls_name: str, hx, label: str) -> None:
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"{cls_name}: Expected {label} to be 1D or 2D, got {hx.dim()}D instead")


class RNNCell(RNNCellBase):
    """Elman cell, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act = tanh or relu."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *, backend="auto"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, bias, device, dtype, backend=backend)

    def forward(self, input: Tensor, hx: Tensor = None) -> Tensor:
        if hx is None:
            return self._step("RNNCell", input, None, 1)[0]
        if hx.dim() not in (1, 2):
            self._check_hidden_dims("RNNCell", hx, "hidden")
        return self._step("RNNCell", input, (hx,), 1)[0]


class LSTMCell(RNNCellBase):
    """LSTM cell, gates (i, f, g, o): ``c' = f*c + i*g``, ``h' = o*tanh(c')``. Returns (h', c')."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto"):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype, backend=backend)

    def forward(self, input: Tensor, hx=None):
        if hx is not None:
            # the common case inline (a step costs what torch.nn's does), the rest explained below
            if not (type(hx) is tuple and len(hx) == 2 and isinstance(hx[0], Tensor) and isinstance(hx[1], Tensor)
                    and hx[0].dim() in (1, 2) and hx[1].dim() in (1, 2)):
                _check_state_pair(hx)
                for k, value in enumerate(hx):
                    self._check_hidden_dims("LSTMCell", value, f"hx[{k}]")
        return self._step("LSTMCell", input, hx, 2)


def _check_state_pair(hx) -> None:
    """hx of an LSTMCell: a tuple (or list) of two tensors, as torch.nn's lstm_cell requires."""
    if not isinstance(hx, (tuple, list)):
        what = f"a Tensor of shape {tuple(hx.shape)}" if isinstance(hx, Tensor) else type(hx).__name__
        raise TypeError(f"LSTMCell: hx must be a tuple (h_0, c_0) of two tensors, got {what}")
    if len(hx) != 2:
        raise RuntimeError(f"LSTMCell expects two hidden states (h_0, c_0), got a {type(hx).__name__} of {len(hx)}")
    for k, value in enumerate(hx):
        if not isinstance(value, Tensor):
            raise TypeError(f"LSTMCell: hx[{k}] must be a Tensor, got {type(value).__name__}")


class GRUCell(RNNCellBase):
    """GRU cell, gates (r, z, n): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``, ``h' = (1-z)*n + z*h``."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, backend="auto"):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype, backend=backend)

    def forward(self, input: Tensor, hx: Tensor = None) -> Tensor:
        if hx is None:
            return self._step("GRUCell", input, None, 1)[0]
        if hx.dim() not in (1, 2):
            self._check_hidden_dims("GRUCell", hx, "hidden")
        return self._step("GRUCell", input, (hx,), 1)[0]
