"""torch.autograd.gradcheck / gradgradcheck on small float64 problems: the analytic first and
second derivatives of fastrnn's layers agree with finite differences.

gradgradcheck runs in fast_mode (random projections of the Jacobian instead of all of it)
to keep the suite fast; it still fails on any wrong second derivative with probability ~1.

RNN with relu is left out: relu is not differentiable at 0, so finite differences are unreliable
there; the tanh Elman cell covers the Elman code path.
"""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import fastrnn
from fastrnn.cells import GRU, LSTM, RNN_TANH

D = torch.float64

MODULE_CASES = {
    "LSTM_proj": (fastrnn.LSTM, dict(proj_size=2)),
    "LSTM": (fastrnn.LSTM, {}),
    "GRU": (fastrnn.GRU, {}),
    "RNN_tanh": (fastrnn.RNN, dict(nonlinearity="tanh")),
}


def _module_function(module, x, hx):
    """f(x, *hx, *params) -> all outputs, for gradcheck over every input at once."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    n_hx = len(hx)

    def f(x, *rest):
        states, weights = rest[:n_hx], rest[n_hx:]
        h = tuple(states) if n_hx == 2 else states[0]
        out, state = functional_call(module, dict(zip(names, weights)), (x, h))
        return (out,) + (tuple(state) if isinstance(state, tuple) else (state,))

    return f, (x, *hx, *params)


def _inputs(module, batch=2, seq_len=3, input_size=3):
    x = torch.randn(seq_len, batch, input_size, dtype=D, requires_grad=True)
    n = module.num_layers * (2 if module.bidirectional else 1)
    h_out = module.proj_size if module.proj_size > 0 else module.hidden_size
    hx = [torch.randn(n, batch, h_out, dtype=D, requires_grad=True)]
    if isinstance(module, fastrnn.LSTM):
        hx.append(torch.randn(n, batch, module.hidden_size, dtype=D, requires_grad=True))
    return x, hx


@pytest.mark.parametrize("kind", list(MODULE_CASES))
def test_gradcheck_bidirectional_two_layers(kind):
    torch.manual_seed(40)
    cls, kw = MODULE_CASES[kind]
    module = cls(3, 4, num_layers=2, bidirectional=True, dtype=D, **kw)
    f, inputs = _module_function(module, *_inputs(module))
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("kind", list(MODULE_CASES))
def test_gradgradcheck_bidirectional_two_layers(kind):
    torch.manual_seed(41)
    cls, kw = MODULE_CASES[kind]
    module = cls(3, 4, num_layers=2, bidirectional=True, dtype=D, **kw)
    f, inputs = _module_function(module, *_inputs(module, batch=2, seq_len=2))
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


LAYER_CASES = [(RNN_TANH, None), (LSTM, None), (LSTM, 2), (GRU, None)]


def _layer_inputs(cell, proj, batch=3, seq_len=4, input_size=3, hidden=4):
    gates = cell.num_gates * hidden
    h_out = proj or hidden

    def r(*shape):
        return (0.5 * torch.randn(*shape, dtype=D)).requires_grad_()

    x = r(seq_len, batch, input_size)
    h0 = r(batch, h_out)
    c0 = r(batch, hidden) if cell.has_cell_state else None
    weights = [r(gates, input_size), r(gates, h_out), r(gates), r(gates)]
    w_hr = r(proj, hidden) if proj else None
    return x, h0, c0, weights, w_hr


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell,proj", LAYER_CASES, ids=["rnn_tanh", "lstm", "lstm_proj", "gru"])
def test_gradcheck_rnn_layer_with_lengths(cell, proj, reverse):
    """Variable lengths (how PackedSequence is served), including a length-1 and a full-length
    sequence, in both directions; first and second derivatives."""
    torch.manual_seed(42)
    x, h0, c0, weights, w_hr = _layer_inputs(cell, proj)
    lengths = torch.tensor([4, 1, 2])
    inputs = [x, h0] + ([c0] if c0 is not None else []) + weights + ([w_hr] if w_hr is not None else [])
    has_c, has_proj = c0 is not None, w_hr is not None

    def f(*args):
        args = list(args)
        x, h0 = args.pop(0), args.pop(0)
        c0 = args.pop(0) if has_c else None
        w_ih, w_hh, b_ih, b_hh = args[:4]
        w_hr = args[4] if has_proj else None
        out, h, c = fastrnn.functional.rnn_layer(
            cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths=lengths, reverse=reverse
        )
        return (out, h) + ((c,) if c is not None else ())

    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_gradcheck_packed_module(kind):
    """gradcheck through a module fed a PackedSequence (packing/unpacking is differentiable)."""
    torch.manual_seed(43)
    cls, kw = MODULE_CASES[kind]
    module = cls(3, 4, bidirectional=True, dtype=D, **kw)
    lengths = torch.tensor([2, 4, 1])
    x = torch.randn(4, 3, 3, dtype=D, requires_grad=True)

    def f(x):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, state = module(packed)
        return (out.data,) + (tuple(state) if isinstance(state, tuple) else (state,))

    assert gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)
