"""Edge cases of the Triton backend's host code (issue 13, found by differential fuzzing):
non-contiguous initial states, an empty batch, double backward. Run in Triton's CPU interpreter
(TRITON_INTERPRET=1, set below as in test_triton_backend.py) against the float64 reference, on
tiny sizes; with a CUDA GPU they run compiled on it.
"""

import torch

from triton_env import DEVICE, FP32_TOL, poison_and_ieee  # noqa: F401  (first: Triton's CPU interpreter without a GPU)

import pytest  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.cells import CELLS  # noqa: E402
from fastrnn.functional import rnn_layer  # noqa: E402
from fastrnn.reference import reference_layer  # noqa: E402
from fastrnn.triton import backend as triton_backend  # noqa: E402
from kernel_helpers import INPUT_NAMES, assert_matches, make_layer_inputs, rel_err, run_and_grad  # noqa: E402


from fastrnn.triton import autograd as triton_autograd  # noqa: E402  (imports Triton)
from fastrnn.triton import launch as triton_launch  # noqa: E402  (the launch regime's test hooks)

REGIMES = {"small-H": None, "large-H-step-wise": {"block_hs": 16, "persistent": False}}


def transposed_layout(t):
    """The same values as ``t`` (B, H), stored column-major: a non-contiguous (B, H) view."""
    return None if t is None else t.t().contiguous().t()


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("cell_name", ["lstm", "gru", "rnn_tanh"])
def test_non_contiguous_states_match_reference(cell_name, regime, monkeypatch):
    """h0 and c0 stored column-major: outputs and every gradient (dh0, dc0, dW_hh...) as the
    reference's. The backward once read the caller's non-contiguous c0 as if it were dense."""
    monkeypatch.setattr(triton_launch, "FORCE_LARGE_H", REGIMES[regime])
    cell = CELLS[cell_name]
    T, B, I, H = 4, 3, 5, 24
    inputs = make_layer_inputs(cell, T, B, I, H, device=DEVICE)
    inputs[1], inputs[2] = transposed_layout(inputs[1]), transposed_layout(inputs[2])
    lengths = torch.tensor([4, 1, 3])

    def ref(*args):
        return reference_layer(cell, *args, None, lengths, False)

    def tri(*args):
        assert not args[1].is_contiguous()  # run_and_grad's leaves keep the layout
        return rnn_layer(cell, *args, lengths=lengths, backend="triton")

    expected, expected_grads = run_and_grad(ref, inputs)
    got, grads = run_and_grad(tri, [t.float() if t is not None else None for t in inputs])
    assert_matches(got, grads, expected, expected_grads, FP32_TOL)


def test_lstm_module_batch_first_states_transposed():
    """The realistic trigger: states kept batch-first and passed as ``.transpose(0, 1)``."""
    torch.manual_seed(0)
    model = fastrnn.LSTM(5, 16, num_layers=2, backend="triton").to(DEVICE)
    ref = fastrnn.LSTM(5, 16, num_layers=2, backend="reference").to(DEVICE).double()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 5, dtype=torch.float64, device=DEVICE)  # (T, B, I)
    h_bf = torch.randn(3, 2, 16, dtype=torch.float64, device=DEVICE)  # (B, layers, H)
    c_bf = torch.randn(3, 2, 16, dtype=torch.float64, device=DEVICE)

    def run(m, dtype):
        h, c = (t.to(dtype, copy=True).requires_grad_() for t in (h_bf, c_bf))
        out, (h_n, c_n) = m(x.to(dtype), (h.transpose(0, 1), c.transpose(0, 1)))
        g = torch.Generator().manual_seed(1)
        loss = sum((y.double() * torch.randn(y.shape, generator=g, dtype=torch.float64).to(DEVICE)).sum()
                   for y in (out, h_n, c_n))
        loss.backward()
        return [h.grad, c.grad] + [p.grad for p in m.parameters()]

    for name, g, e in zip(["h", "c"] + [n for n, _ in model.named_parameters()], run(model, torch.float32),
                          run(ref, torch.float64)):
        assert rel_err(g, e) < FP32_TOL, f"grad of {name}"


def test_lstm_cell_non_contiguous_state():
    torch.manual_seed(0)
    cell = fastrnn.LSTMCell(5, 16, backend="triton").to(DEVICE)
    ref = fastrnn.LSTMCell(5, 16, backend="reference").to(DEVICE).double()
    ref.load_state_dict(cell.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64, device=DEVICE)
    hc = torch.randn(2, 16, 3, dtype=torch.float64, device=DEVICE)  # states stored (2, H, B)

    def run(m, dtype):
        state = hc.to(dtype, copy=True).requires_grad_()
        h, c = m(x.to(dtype), (state[0].t(), state[1].t()))
        ((h.double() * 1.5).sum() + (c.double() ** 2).sum()).backward()
        return [state.grad] + [p.grad for p in m.parameters()]

    for g, e in zip(run(cell, torch.float32), run(ref, torch.float64)):
        assert rel_err(g, e) < FP32_TOL


# ----------------------------------------------------------------------------- item 2


@pytest.mark.parametrize("shape", [(3, 0), (0, 2)], ids=["batch-0", "length-0"])
@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_empty_problem_stays_in_the_graph(cell_name, shape):
    """An empty batch (or sequence) gives outputs that are part of the graph: backward works and
    every gradient is a zero tensor, as the reference (and torch.nn, for batch 0) gives."""
    cell = CELLS[cell_name]
    T, B = shape
    inputs = [t.float() if t is not None else None for t in make_layer_inputs(cell, T, B, 5, 24, device=DEVICE)]
    got, grads = run_and_grad(lambda *a: rnn_layer(cell, *a, backend="triton"), inputs)
    expected, expected_grads = run_and_grad(lambda *a: reference_layer(cell, *a, None, None, False), inputs)
    assert got[0].shape == (T, B, 24)
    assert got[0].grad_fn is not None or T == 0  # length 0: no output to connect; h_T is h0
    for name, g, e in zip(INPUT_NAMES, grads, expected_grads):
        if e is None:
            continue
        assert g is not None and g.shape == e.shape, f"grad of {name}"
        assert torch.equal(g, e), f"grad of {name}"
    if B == 0:  # the weights got zero gradients (not None)
        assert all(g is not None and g.numel() > 0 and g.abs().max() == 0 for g in grads[3:])


def test_module_batch_0_backward():
    model = fastrnn.GRU(5, 16, num_layers=2, bidirectional=True, backend="triton").to(DEVICE)
    out, h_n = model(torch.randn(4, 0, 5, device=DEVICE))
    (out.sum() + h_n.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name


# ----------------------------------------------------------------------------- item 3


def gradient_penalty_grads(backend, dtype, cell_name="lstm"):
    """WGAN-GP style: penalty = (|d sum(out*w)/dx| - 1)^2; returns its gradients with respect to
    every parameter (through a second derivative of the layer)."""
    torch.manual_seed(2)
    cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn_tanh": fastrnn.RNN}[cell_name]
    model = cls(5, 16, bidirectional=True, backend=backend).to(DEVICE, dtype)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64).to(DEVICE, dtype).requires_grad_()
    w = torch.randn(4, 3, 32, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    out, _ = model(x)
    (dx,) = torch.autograd.grad((out * w).sum(), x, create_graph=True)
    penalty = (dx.flatten(1).norm(dim=1) - 1).pow(2).sum()
    penalty.backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "rnn_tanh"])
def test_gradient_penalty_matches_reference(cell_name):
    """Double backward through the Triton backend equals the float64 reference's (it once
    returned a silently wrong weight gradient: the second-order path was cut at the kernel)."""
    got = gradient_penalty_grads("triton", torch.float32, cell_name)
    expected = gradient_penalty_grads("reference", torch.float64, cell_name)
    for name, e in expected.items():
        assert got[name] is not None, name
        assert rel_err(got[name], e) < FP32_TOL, f"grad of {name}"


def test_second_derivative_with_respect_to_states_and_input():
    """Hessian-vector products in x, h0, c0 and a weight through the Triton layer (create_graph)
    equal the reference's in float64-rounded-to-float32 inputs."""
    cell = CELLS["lstm"]
    inputs = make_layer_inputs(cell, 3, 2, 4, 16, device=DEVICE)
    v = [torch.randn_like(t) for t in inputs[:3]]

    def hvp(backend, dtype):
        leaves = [t.to(dtype, copy=True).requires_grad_() for t in inputs]
        out, h, c = rnn_layer(cell, *leaves, backend=backend)
        first = torch.autograd.grad((out.sin().sum() + (h * c).sum()), leaves[:3], create_graph=True)
        inner = sum((g * vv.to(dtype)).sum() for g, vv in zip(first, v))
        return torch.autograd.grad(inner, leaves[:5])

    for name, g, e in zip(INPUT_NAMES, hvp("triton", torch.float32), hvp("reference", torch.float64)):
        assert rel_err(g, e) < FP32_TOL, name


def test_first_order_backward_still_runs_the_kernel():
    cell = CELLS["gru"]
    inputs = [t.float() for t in make_layer_inputs(cell, 3, 2, 5, 24, device=DEVICE) if t is not None]
    inputs.insert(2, None)
    before = triton_autograd.LAUNCHES["backward"]
    run_and_grad(lambda *a: rnn_layer(cell, *a, backend="triton"), inputs)
    assert triton_autograd.LAUNCHES["backward"] == before + 1


@pytest.mark.parametrize("sizes", [(3, 0), (0, 16)])
@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_with_size_0(cls, sizes):
    """Item 6 on this backend: torch.nn's cells take sizes 0; hidden size 0 has no kernel work
    (built on the reference), input size 0 runs the kernels on the biases alone."""
    torch.manual_seed(4)
    cell = getattr(fastrnn, cls)(*sizes, backend="triton").to(DEVICE)
    ref = getattr(fastrnn, cls)(*sizes, backend="reference").to(DEVICE).double()
    ref.load_state_dict(cell.state_dict())
    x = torch.randn(2, sizes[0], device=DEVICE)
    got, expected = cell(x), ref(x.double())
    if not isinstance(got, tuple):
        got, expected = (got,), (expected,)
    for g, e in zip(got, expected):
        assert g.shape == e.shape == (2, sizes[1])
        if e.numel():
            assert rel_err(g, e) < FP32_TOL
