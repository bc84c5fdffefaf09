"""The models the tracer tests (compile, export, ONNX, jit) run: a 2-layer LSTM, a bidirectional
batch-first GRU and an Elman RNN (relu), each wrapped so that inputs and outputs are flat tensors
(x, h0[, c0]) -> (out, h_n[, c_n]), as an exporter wants them."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.export import Dim

import fastrnn

INPUT, HIDDEN = 3, 5

KINDS = {
    "lstm_2layer": (fastrnn.LSTM, {"num_layers": 2}),
    "gru_bidirectional": (fastrnn.GRU, {"bidirectional": True, "batch_first": True}),
    "elman_relu": (fastrnn.RNN, {"nonlinearity": "relu"}),
}


class Flat(nn.Module):
    """``rnn(x, hx)`` with hx given as separate tensors and the outputs flattened."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor = None):
        out, state = self.rnn(x, h0 if c0 is None else (h0, c0))
        return (out, *state) if isinstance(state, tuple) else (out, state)


def make_model(kind: str, dtype=torch.float64, seed: int = 0, **overrides) -> Flat:
    torch.manual_seed(seed)
    cls, kwargs = KINDS[kind]
    return Flat(cls(INPUT, HIDDEN, dtype=dtype, **{**kwargs, **overrides}))


def make_inputs(model: Flat, seq_len: int, batch: int, dtype=torch.float64, seed: int = 1):
    """(x, h0[, c0]) with random values, x laid out as the module's batch_first says."""
    rnn = model.rnn
    g = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len, INPUT) if rnn.batch_first else (seq_len, batch, INPUT)
    states = (rnn.num_layers * rnn.num_directions, batch, HIDDEN)
    inputs = [torch.randn(shape, generator=g, dtype=dtype), torch.randn(states, generator=g, dtype=dtype)]
    if rnn.cell.has_cell_state:
        inputs.append(torch.randn(states, generator=g, dtype=dtype))
    return tuple(inputs)


def dynamic_shapes(model: Flat):
    """torch.export dynamic_shapes for make_inputs' tensors: T and B dynamic."""
    seq_len, batch = Dim("T", min=2, max=4096), Dim("B", min=2, max=1024)
    x = {0: batch, 1: seq_len} if model.rnn.batch_first else {0: seq_len, 1: batch}
    states = {1: batch}
    return (x, states, states) if model.rnn.cell.has_cell_state else (x, states)


def layer_directions(model: Flat) -> int:
    return model.rnn.num_layers * model.rnn.num_directions
