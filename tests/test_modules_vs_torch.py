"""fastrnn.RNN / LSTM / GRU against torch.nn in float64 with identical weights.

Outputs, final states and the gradients of the input, the initial states and every parameter
must agree to float64 rounding, for every combination of the constructor's structural options.
"""

import itertools

import pytest
import torch
from torch import nn

import fastrnn
from helpers import MODULES, make_pair, random_hx, run_and_compare

KINDS = list(MODULES)


@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_given"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("kind", KINDS)
def test_options_product(kind, num_layers, bidirectional, batch_first, bias, with_hx):
    torch.manual_seed(0)
    ref, fast = make_pair(
        kind, 5, 24, num_layers=num_layers, bidirectional=bidirectional,
        batch_first=batch_first, bias=bias,
    )
    batch, seq_len = 3, 7
    shape = (batch, seq_len, 5) if batch_first else (seq_len, batch, 5)
    x = torch.randn(shape, dtype=torch.float64)
    hx = random_hx(ref, batch) if with_hx else None
    run_and_compare(ref, fast, x, hx)


@pytest.mark.parametrize("batch,seq_len,hidden", [(1, 1, 40), (17, 7, 24), (1, 7, 40), (17, 1, 24), (3, 7, 40)])
@pytest.mark.parametrize("kind", KINDS)
def test_odd_sizes(kind, batch, seq_len, hidden):
    torch.manual_seed(1)
    ref, fast = make_pair(kind, 5, hidden, num_layers=2, bidirectional=True)
    x = torch.randn(seq_len, batch, 5, dtype=torch.float64)
    run_and_compare(ref, fast, x, random_hx(ref, batch))


def test_lstm_proj_odd_sizes():
    torch.manual_seed(2)
    ref, fast = make_pair("LSTM", 7, 40, proj_size=11, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(17, 7, 7, dtype=torch.float64)
    run_and_compare(ref, fast, x, random_hx(ref, 17))


def test_hx_as_list_for_lstm():
    """torch.nn accepts hx as a list [h0, c0] for LSTM; so must fastrnn."""
    torch.manual_seed(3)
    ref, fast = make_pair("LSTM", 5, 24)
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    h0, c0 = random_hx(ref, 2)
    out_ref, (h_ref, c_ref) = ref(x, [h0, c0])
    out_fast, (h_fast, c_fast) = fast(x, [h0, c0])
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_fast, c_ref, rtol=1e-10, atol=1e-12)


def _construct(torch_cls, fast_cls, extra, kw):
    torch.manual_seed(1234)
    ref = torch_cls(5, 24, **extra, **kw)
    ref_rng = torch.get_rng_state()
    torch.manual_seed(1234)
    fast = fast_cls(5, 24, **extra, **kw)
    # The constructor consumes the global RNG exactly as torch.nn does (models built after it
    # get the same weights too).
    assert torch.equal(torch.get_rng_state(), ref_rng), "RNG state after construction differs"
    return ref, fast


STRUCTURES = [
    dict(num_layers=n, bidirectional=bi, bias=b)
    for n, bi, b in itertools.product([1, 3], [False, True], [True, False])
]


@pytest.mark.parametrize("kw", STRUCTURES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_parameters(kind, kw):
    torch_cls, fast_cls, extra = MODULES[kind]
    ref, fast = _construct(torch_cls, fast_cls, extra, kw)
    ref_params, fast_params = list(ref.named_parameters()), list(fast.named_parameters())
    assert [n for n, _ in fast_params] == [n for n, _ in ref_params]
    for (name, p), (_, q) in zip(ref_params, fast_params):
        assert q.shape == p.shape, name
        assert q.dtype == p.dtype == torch.float32, name
        assert torch.equal(q, p), f"{name} initialised differently from torch.nn"
    assert list(fast.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_argument_and_reset_parameters(kind):
    torch_cls, fast_cls, extra = MODULES[kind]
    ref, fast = _construct(torch_cls, fast_cls, extra, dict(num_layers=2, dtype=torch.float64))
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert q.dtype == torch.float64
        assert torch.equal(q, p), name
    torch.manual_seed(99)
    ref.reset_parameters()
    torch.manual_seed(99)
    fast.reset_parameters()
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.equal(q, p), f"reset_parameters differs for {name}"


REPR_CASES = [
    ("RNN_TANH", {}),
    ("RNN_RELU", {}),
    ("LSTM", {}),
    ("LSTM_PROJ", {}),
    ("GRU", {}),
    ("LSTM", dict(num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True)),
    ("GRU", dict(num_layers=3, dropout=0.5)),
    ("RNN_RELU", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("LSTM_PROJ", dict(num_layers=2, bidirectional=True, bias=False)),
]


@pytest.mark.parametrize("kind,kw", REPR_CASES)
def test_repr_matches_torch(kind, kw):
    torch_cls, fast_cls, extra = MODULES[kind]
    ref, fast = _construct(torch_cls, fast_cls, extra, kw)
    expected = ref.extra_repr()
    if kind == "RNN_RELU":
        # torch.nn.RNN's repr omits the nonlinearity (so relu and tanh RNNs print alike);
        # fastrnn.RNN appends it, as torch.nn.RNNCell does. Everything else is identical.
        assert "relu" not in expected
        expected += ", nonlinearity='relu'"
    assert fast.extra_repr() == expected
    assert repr(fast) == repr(ref).replace(ref.extra_repr(), expected)


def test_repr_names_explicit_backend():
    fast = fastrnn.LSTM(5, 24, backend="reference")
    assert repr(fast) == "LSTM(5, 24, backend='reference')"


@pytest.mark.parametrize("kind", KINDS)
def test_attributes_match_torch(kind):
    torch_cls, fast_cls, extra = MODULES[kind]
    ref, fast = _construct(torch_cls, fast_cls, extra, dict(num_layers=2, bidirectional=True))
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                 "dropout", "bidirectional", "proj_size", "_flat_weights_names"):
        assert getattr(fast, attr) == getattr(ref, attr), attr
    assert [[tuple(w.shape) for w in ws] for ws in fast.all_weights] == [
        [tuple(w.shape) for w in ws] for ws in ref.all_weights
    ]
    if kind.startswith("RNN"):
        assert fast.nonlinearity == ref.nonlinearity
    fast.flatten_parameters()  # exists and is harmless
