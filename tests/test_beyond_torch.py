"""What fastrnn promises beyond cuDNN-backed torch.nn (design.md §1): backward in eval mode,
double backward, sequences longer than 65,535 steps, non-contiguous inputs, an empty batch."""

import pytest
import torch
from torch import nn

import fastrnn
from helpers import MODULES, assert_close, assert_close_grads, flat, leaf_copy, make_pair, random_hx

D = torch.float64
KINDS = list(MODULES)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_in_eval_mode(kind):
    """Gradients in eval mode equal torch.nn's in train mode (dropout 0 makes them the same
    function)."""
    torch.manual_seed(60)
    ref, fast = make_pair(kind, 5, 24, num_layers=2, bidirectional=True)
    ref.train()
    fast.eval()
    x = torch.randn(7, 3, 5, dtype=D)
    hx = random_hx(ref, 3)
    x_ref, x_fast, h_ref, h_fast = leaf_copy(x), leaf_copy(x), leaf_copy(hx), leaf_copy(hx)
    out_ref, out_fast = ref(x_ref, h_ref), fast(x_fast, h_fast)
    upstream = [torch.randn_like(t) for t in flat(out_ref)]
    torch.autograd.backward(flat(out_ref), upstream)
    torch.autograd.backward(flat(out_fast), upstream)
    assert_close_grads(ref, fast, flat(x_ref) + flat(h_ref), flat(x_fast) + flat(h_fast))


@pytest.mark.parametrize("kind", ["LSTM", "LSTM_PROJ", "GRU", "RNN_TANH"])
def test_double_backward_matches_finite_differences(kind):
    """Hessian-vector product through the module (grad with create_graph, then grad again)
    equals central finite differences of the first gradient, and torch.nn's on the CPU."""
    torch.manual_seed(61)
    ref, fast = make_pair(kind, 3, 5, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=D)
    upstream = None

    def first_grad(module, x, create_graph):
        nonlocal upstream
        out, _ = module(x)
        if upstream is None:
            upstream = torch.randn_like(out)
        loss = (out * upstream).sum()
        return torch.autograd.grad(loss, [x, module.weight_hh_l0], create_graph=create_graph)

    v = torch.randn_like(x)
    second = []
    for module in (fast, ref):
        xl = x.clone().requires_grad_()
        gx, _ = first_grad(module, xl, create_graph=True)
        # d/dx <gx, v> = H_xx v and d/dW_hh <gx, v> = H_wx v (mixed second derivative)
        second.append(torch.autograd.grad((gx * v).sum(), [xl, module.weight_hh_l0]))
    eps = 1e-6
    gp = first_grad(fast, (x + eps * v).requires_grad_(), create_graph=False)
    gm = first_grad(fast, (x - eps * v).requires_grad_(), create_graph=False)
    fd_xx = (gp[0] - gm[0]) / (2 * eps)
    fd_wx = (gp[1] - gm[1]) / (2 * eps)  # symmetry of mixed partials
    (h_xx, h_wx), (h_xx_ref, h_wx_ref) = second
    assert torch.count_nonzero(h_xx) > 0 and torch.count_nonzero(h_wx) > 0
    torch.testing.assert_close(h_xx, fd_xx, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(h_wx, fd_wx, rtol=1e-5, atol=1e-7)
    assert_close(h_xx, h_xx_ref)
    assert_close(h_wx, h_wx_ref)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_triple_backward_runs_and_matches_torch(kind):
    torch.manual_seed(62)
    ref, fast = make_pair(kind, 3, 4)
    x = torch.randn(3, 2, 3, dtype=D)
    results = []
    for module in (fast, ref):
        xl = x.clone().requires_grad_()
        out, _ = module(xl)
        (g1,) = torch.autograd.grad(out.pow(2).sum(), xl, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), xl, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sum(), xl)
        results.append(g3)
    assert torch.count_nonzero(results[0]) > 0
    assert_close(results[0], results[1])


LONG_T = 65_600  # past cuDNN's 65,535-step limit


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["RNN_TANH", "GRU"])
def test_sequence_longer_than_65535_steps(kind):
    """Forward matches torch.nn (CPU, float64); backward runs and its gradient agrees with a
    finite difference along a random direction in (input, parameters). (Not compared with
    torch.nn's backward: that takes ~25 s for the GRU on this CPU.)"""
    torch.manual_seed(63)
    ref, fast = make_pair(kind, 3, 2)
    x = torch.randn(LONG_T, 1, 3, dtype=D)
    with torch.no_grad():
        out_ref, h_ref = ref(x)
    xl = x.clone().requires_grad_()
    out, h = fast(xl)
    assert out.shape == (LONG_T, 1, 2)
    assert_close(h, h_ref)
    assert_close(out[-100:], out_ref[-100:])
    assert_close(out[:100], out_ref[:100])

    w_out = torch.randn(LONG_T, 1, 2, dtype=D) / LONG_T**0.5
    w_h = torch.randn(1, 1, 2, dtype=D)
    loss = (out * w_out).sum() + (h * w_h).sum()
    loss.backward()
    params = list(fast.parameters())
    assert all(torch.isfinite(p.grad).all() for p in params) and torch.isfinite(xl.grad).all()

    directions = [torch.randn_like(x)] + [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip([xl.grad] + [p.grad for p in params], directions))

    def loss_at(eps):
        with torch.no_grad():
            saved = [p.clone() for p in params]
            for p, d in zip(params, directions[1:]):
                p.add_(eps * d)
            o, hh = fast(x + eps * directions[0])
            for p, s in zip(params, saved):
                p.copy_(s)
        return (o * w_out).sum() + (hh * w_h).sum()

    # One-sided difference from the loss already computed (one forward less than a central
    # difference: each forward here is a 65,600-step Python loop); its error is O(eps).
    eps = 1e-7
    numeric = (loss_at(eps) - loss.detach()) / eps
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ non-contiguous


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_input_and_hx(kind):
    torch.manual_seed(64)
    _, fast = make_pair(kind, 5, 24, num_layers=2, bidirectional=True, batch_first=True)
    # Strided views: a transposed time-major buffer, and every other feature of a wider buffer.
    x_t = torch.randn(7, 3, 5, dtype=D).transpose(0, 1)  # (B, T, I) view of a (T, B, I) buffer
    x_s = torch.randn(3, 7, 10, dtype=D)[:, :, ::2]
    hx = random_hx(fast, 3)
    hx_nc = tuple(torch.randn(t.shape[::-1], dtype=D).permute(2, 1, 0).copy_(t) for t in flat(hx))
    assert not any(t.is_contiguous() for t in hx_nc)
    hx_nc = hx_nc if isinstance(hx, tuple) else hx_nc[0]
    for x in (x_t, x_s):
        assert not x.is_contiguous()
        a_x, a_h = leaf_copy(x), leaf_copy(hx_nc)
        b_x, b_h = x.contiguous().requires_grad_(), leaf_copy(hx)
        out_a, out_b = fast(a_x, a_h), fast(b_x, b_h)
        for u, v in zip(flat(out_a), flat(out_b)):
            torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-15)
        g = [torch.randn_like(t) for t in flat(out_a)]
        torch.autograd.backward(flat(out_a), g)
        grads_a = [t.grad.clone() for t in flat(a_x) + flat(a_h)] + [p.grad.clone() for p in fast.parameters()]
        fast.zero_grad()
        torch.autograd.backward(flat(out_b), g)
        grads_b = [t.grad for t in flat(b_x) + flat(b_h)] + [p.grad for p in fast.parameters()]
        fast.zero_grad()
        for u, v in zip(grads_a, grads_b):
            torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_non_contiguous_cell_input(kind):
    torch.manual_seed(65)
    cell = getattr(fastrnn, kind)(5, 6, dtype=D)
    x = torch.randn(5, 4, dtype=D).t()
    h = torch.randn(6, 4, dtype=D).t()
    hx = (h, torch.randn(6, 4, dtype=D).t()) if kind == "LSTMCell" else h
    a = cell(x, hx)
    b = cell(x.contiguous(), tuple(t.contiguous() for t in hx) if isinstance(hx, tuple) else hx.contiguous())
    for u, v in zip(flat(a), flat(b)):
        torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- empty batch


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_zero(kind, batch_first):
    torch.manual_seed(66)
    ref, fast = make_pair(kind, 5, 24, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn((0, 7, 5) if batch_first else (7, 0, 5), dtype=D, requires_grad=True)
    out, state = fast(x)
    out_ref, state_ref = ref(x.detach())
    assert out.shape == out_ref.shape
    for s, s_ref in zip(flat(state), flat(state_ref)):
        assert s.shape == s_ref.shape and s.shape[1] == 0
    loss = out.sum() + sum(s.sum() for s in flat(state))
    loss.backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for name, p in fast.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name


def test_batch_of_zero_with_hx_and_cells():
    lstm = fastrnn.LSTM(5, 4, dtype=D)
    hx = (torch.zeros(1, 0, 4, dtype=D), torch.zeros(1, 0, 4, dtype=D))
    out, (h, c) = lstm(torch.randn(3, 0, 5, dtype=D), hx)
    assert out.shape == (3, 0, 4) and h.shape == c.shape == (1, 0, 4)
    for cls in (fastrnn.RNNCell, fastrnn.GRUCell):
        assert cls(5, 4, dtype=D)(torch.randn(0, 5, dtype=D)).shape == (0, 4)
    h, c = fastrnn.LSTMCell(5, 4, dtype=D)(torch.randn(0, 5, dtype=D))
    assert h.shape == c.shape == (0, 4)
