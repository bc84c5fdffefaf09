"""fastrnn.functional: the one-layer, one-direction seam, its lengths semantics and argument checks."""

import pytest
import torch
from torch import nn

import fastrnn.functional as Fn
from fastrnn.cells import CELLS, GRU, LSTM, RNN_TANH

D = torch.float64
T, B, I, H = 6, 5, 3, 7
LENGTHS = [6, 1, 3, 0, 5]  # full, length 1, middle, empty, one short of full


def _weights(cell, proj=None, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    gates = cell.num_gates * H
    h_out = proj or H

    def r(*shape):
        return 0.4 * torch.randn(*shape, generator=g, dtype=D)

    w = dict(weight_ih=r(gates, I), weight_hh=r(gates, h_out))
    if bias:
        w.update(bias_ih=r(gates), bias_hh=r(gates))
    if proj:
        w["weight_hr"] = r(proj, H)
    return w


def _state(cell, proj=None, batch=B, seed=1):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(batch, proj or H, generator=g, dtype=D)
    c0 = torch.randn(batch, H, generator=g, dtype=D) if cell.has_cell_state else None
    return h0, c0


CASES = [("rnn_tanh", None), ("rnn_relu", None), ("lstm", None), ("lstm", 4), ("gru", None)]
IDS = ["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name,proj", CASES, ids=IDS)
def test_lengths_equal_separate_truncated_runs(name, proj, reverse):
    cell = CELLS[name]
    w = _weights(cell, proj)
    h0, c0 = _state(cell, proj)
    x = torch.randn(T, B, I, dtype=D)
    lengths = torch.tensor(LENGTHS)
    out, h, c = Fn.rnn_layer(cell, x, h0, c0, **w, lengths=lengths, reverse=reverse)
    h_out = proj or H
    assert out.shape == (T, B, h_out) and h.shape == (B, h_out)
    for b, n in enumerate(LENGTHS):
        # Past its length a sequence's output is exactly zero (not just small).
        assert torch.count_nonzero(out[n:, b]) == 0
        if n == 0:
            assert torch.equal(h[b], h0[b])
            if c is not None:
                assert torch.equal(c[b], c0[b])
            continue
        xb = x[:n, b : b + 1]
        out_b, h_b, c_b = Fn.rnn_layer(
            cell, xb, h0[b : b + 1], None if c0 is None else c0[b : b + 1], **w, reverse=reverse
        )
        torch.testing.assert_close(out[:n, b], out_b[:, 0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(h[b], h_b[0], rtol=1e-12, atol=1e-14)
        if c is not None:
            torch.testing.assert_close(c[b], c_b[0], rtol=1e-12, atol=1e-14)
        # The final state is the state at the sequence's last step processed: t = n-1 going
        # forward, t = 0 going backward; for the Elman and GRU cells that is the output there.
        if not cell.has_cell_state:
            last = 0 if reverse else n - 1
            assert torch.equal(h[b], out[last, b])


@pytest.mark.parametrize("name,proj", CASES, ids=IDS)
def test_lengths_all_full_equals_no_lengths(name, proj):
    cell = CELLS[name]
    w = _weights(cell, proj)
    h0, c0 = _state(cell, proj)
    x = torch.randn(T, B, I, dtype=D)
    a = Fn.rnn_layer(cell, x, h0, c0, **w, lengths=torch.full((B,), T))
    b = Fn.rnn_layer(cell, x, h0, c0, **w)
    for u, v in zip(a, b):
        if u is not None:
            torch.testing.assert_close(u, v, rtol=1e-14, atol=0)


def _torch_layer(name, proj, w, bias=True):
    kind = {"rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")), "rnn_relu": (nn.RNN, dict(nonlinearity="relu")),
            "lstm": (nn.LSTM, dict(proj_size=proj or 0)), "gru": (nn.GRU, {})}[name]
    module = kind[0](I, H, bias=bias, dtype=D, **kind[1])
    module.load_state_dict({f"{k}_l0": v for k, v in w.items()})
    return module


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,proj", CASES, ids=IDS)
def test_per_cell_wrappers_match_torch(name, proj, bias):
    cell = CELLS[name]
    w = _weights(cell, proj, bias=bias)
    h0, c0 = _state(cell, proj)
    x = torch.randn(T, B, I, dtype=D)
    ref = _torch_layer(name, proj, w, bias)
    args = [w["weight_ih"], w["weight_hh"]] + ([w["bias_ih"], w["bias_hh"]] if bias else [])
    if name == "lstm":
        out, (h, c) = Fn.lstm_layer(x, (h0, c0), *args, **({"weight_hr": w["weight_hr"]} if proj else {}))
        out_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
        torch.testing.assert_close(c, c_ref[0], rtol=1e-10, atol=1e-12)
    else:
        fn = {"rnn_tanh": Fn.rnn_tanh_layer, "rnn_relu": Fn.rnn_relu_layer, "gru": Fn.gru_layer}[name]
        out, h = fn(x, h0, *args)
        out_ref, h_ref = ref(x, h0[None])
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h_ref[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
def test_none_state_means_zeros(name):
    cell = CELLS[name]
    w = _weights(cell)
    x = torch.randn(T, B, I, dtype=D)
    zeros = torch.zeros(B, H, dtype=D)
    a = Fn.rnn_layer(cell, x, None, None, **w)
    b = Fn.rnn_layer(cell, x, zeros, zeros if cell.has_cell_state else None, **w)
    for u, v in zip(a, b):
        assert (u is None) == (v is None)
        if u is not None:
            assert torch.equal(u, v)
    out, (h, c) = Fn.lstm_layer(x, None, **_weights(LSTM))
    assert h.shape == c.shape == (B, H)


def test_reverse_without_lengths_is_flipped_forward():
    w = _weights(GRU)
    h0, _ = _state(GRU)
    x = torch.randn(T, B, I, dtype=D)
    out_r, h_r, _ = Fn.rnn_layer(GRU, x, h0, None, **w, reverse=True)
    out_f, h_f, _ = Fn.rnn_layer(GRU, x.flip(0), h0, None, **w)
    # (not bit-equal: the input GEMM sees the rows in another order)
    torch.testing.assert_close(out_r, out_f.flip(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(h_r, h_f, rtol=1e-12, atol=1e-14)


def test_lengths_gradients_do_not_leak_past_the_end():
    """Inputs past a sequence's length get exactly zero gradient."""
    w = _weights(LSTM)
    x = torch.randn(T, B, I, dtype=D, requires_grad=True)
    out, h, c = Fn.rnn_layer(LSTM, x, None, None, **w, lengths=torch.tensor(LENGTHS), reverse=True)
    (out * torch.randn_like(out)).sum().add((h * c).sum()).backward()
    for b, n in enumerate(LENGTHS):
        assert torch.count_nonzero(x.grad[n:, b]) == 0
        if n:
            assert torch.count_nonzero(x.grad[:n, b]) > 0


# ------------------------------------------------------------------------------ bad arguments

x3 = torch.randn(T, B, I, dtype=D)
WG, WL = _weights(GRU), _weights(LSTM)


BAD = [
    ("h0_shape", lambda: Fn.gru_layer(x3, torch.zeros(B + 1, H, dtype=D), **WG), RuntimeError,
     ["h0", f"({B}, {H})", f"({B + 1}, {H})"]),
    ("h0_dtype", lambda: Fn.gru_layer(x3, torch.zeros(B, H), **WG), RuntimeError,
     ["h0", "torch.float32", "torch.float64"]),
    ("float_lengths", lambda: Fn.gru_layer(x3, None, **WG, lengths=torch.ones(B)), ValueError,
     ["lengths", "integer", "torch.float32"]),
    ("bool_lengths", lambda: Fn.gru_layer(x3, None, **WG, lengths=torch.ones(B, dtype=torch.bool)), ValueError,
     ["lengths", "integer", "torch.bool"]),
    ("lengths_shape", lambda: Fn.gru_layer(x3, None, **WG, lengths=torch.ones(B + 1, dtype=torch.long)), ValueError,
     ["lengths", f"({B},)", f"({B + 1},)"]),
    ("lstm_c0_missing", lambda: Fn.rnn_layer(LSTM, x3, torch.zeros(B, H, dtype=D), None, **WL), ValueError,
     ["c0", "None"]),
    ("lstm_hx_c0_missing", lambda: Fn.lstm_layer(x3, (torch.zeros(B, H, dtype=D), None), **WL), ValueError,
     ["c0", "None"]),
    ("lstm_h0_missing", lambda: Fn.rnn_layer(LSTM, x3, None, torch.zeros(B, H, dtype=D), **WL), ValueError,
     ["h0", "None", f"({B}, {H})"]),
    ("lstm_c0_shape", lambda: Fn.lstm_layer(x3, (torch.zeros(B, H, dtype=D), torch.zeros(B, H + 1, dtype=D)), **WL),
     RuntimeError, ["c0", f"({B}, {H})", f"({B}, {H + 1})"]),
    ("gru_given_c0", lambda: Fn.rnn_layer(GRU, x3, None, torch.zeros(B, H, dtype=D), **WG), ValueError,
     ["gru", "no cell state", "c0"]),
    ("x_2d", lambda: Fn.gru_layer(x3[0], None, **WG), ValueError, ["3-D", f"({B}, {I})"]),
    ("weight_ih_shape", lambda: Fn.gru_layer(x3, None, torch.zeros(3 * H, I + 1, dtype=D), WG["weight_hh"]),
     RuntimeError, ["weight_ih", f"({3 * H}, {I})", f"({3 * H}, {I + 1})"]),
    ("weight_hh_rows", lambda: Fn.gru_layer(x3, None, WG["weight_ih"], torch.zeros(3 * H - 1, H, dtype=D)),
     ValueError, ["weight_hh", "3 * hidden_size", f"({3 * H - 1}, {H})"]),
    ("one_bias_missing", lambda: Fn.gru_layer(x3, None, WG["weight_ih"], WG["weight_hh"], WG["bias_ih"]),
     ValueError, ["bias_hh", "None", f"({3 * H},)"]),
    ("proj_for_gru", lambda: Fn.rnn_layer(GRU, x3, None, None, **WG, weight_hr=torch.zeros(2, H, dtype=D)),
     ValueError, ["weight_hr", "LSTM", "gru"]),
    ("weight_dtype", lambda: Fn.rnn_tanh_layer(x3, None, torch.zeros(H, I), torch.zeros(H, H)), RuntimeError,
     ["weight_ih", "torch.float32", "torch.float64"]),
]


@pytest.mark.parametrize("call,error,substrings", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_arguments(call, error, substrings):
    with pytest.raises(error) as e:
        call()
    assert type(e.value) is error
    for s in substrings:
        assert s in str(e.value), str(e.value)


def test_rnn_tanh_cell_object_accepted():
    assert Fn.rnn_layer(RNN_TANH, x3, None, None, **_weights(RNN_TANH))[2] is None
