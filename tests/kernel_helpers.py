"""Helpers shared by the kernel-backend tests (Triton, CUDA): inputs, a loss with gradients, and
the relative error of design.md §6 (|got - ref|max / |ref|max, NaN = a buffer left unwritten)."""

from __future__ import annotations

import torch

FP32_TOL = 1e-4  # relative error of fp32 kernels against the float64 reference (design.md §6)


# Layer cases both kernel backends run against the float64 reference (each adds its own sizes:
# the Triton tests run in the CPU interpreter, the CUDA tests on a GPU).
# name: (T, B, I, H, reverse, lengths, given state, bias)
LAYER_CASES = {
    "T5-B3-H24": (5, 3, 7, 24, False, None, True, True),
    "T5-B17-H40-reverse-zero-state": (5, 17, 10, 40, True, None, False, True),
    "T1-B1-H24": (1, 1, 5, 24, False, None, True, True),
    "T6-B3-H40-lengths": (6, 3, 7, 40, False, [6, 3, 0], True, True),
}


def rel_err(got, ref):
    assert got is not None and ref is not None
    assert not torch.isnan(got).any(), "NaN in a kernel result: a buffer was not fully written"
    ref = ref.double()
    scale = ref.abs().max().item()
    diff = (got.double() - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def make_layer_inputs(cell, T, B, I, H, device, bias=True, state=True, seed=0):
    """float64 tensors on ``device``: x, h0, c0, w_ih, w_hh, b_ih, b_hh (None where absent)."""
    g = torch.Generator().manual_seed(seed)
    G = cell.num_gates
    k = H**-0.5

    def u(*shape):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * k).to(device)

    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(device)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64).to(device) * 0.5 if state else None
    c0 = None
    if cell.has_cell_state and state:
        c0 = torch.randn(B, H, generator=g, dtype=torch.float64).to(device)
    # weights a bit larger than torch's init, so the recurrence matters and gates saturate a little
    w_ih, w_hh = u(G * H, I) * 2, u(G * H, H) * 2
    b_ih, b_hh = (u(G * H), u(G * H)) if bias else (None, None)
    return [x, h0, c0, w_ih, w_hh, b_ih, b_hh]


def run_and_grad(fn, inputs, seed=1):
    """Run fn(*inputs) -> (out, h, c); backprop a random linear loss; return results and grads."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out, h, c = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    loss = 0
    for y in (out, h, c):
        if y is not None:
            w = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device)
            loss = loss + (y.double() * w).sum()
    loss.backward()
    return (out, h, c), [t.grad if t is not None else None for t in leaves]


def layer_lengths(spec, T, B):
    """Per-sequence lengths of a layer case: None, a list, or "random" (always with a zero length
    and a full one)."""
    if spec == "random":
        lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(3))
        lengths[0], lengths[1] = 0, T
        return lengths
    return torch.tensor(spec) if spec is not None else None


def run_layer_case(backend, cell, T, B, I, H, reverse, lengths, state, bias, device):
    """One layer-direction through the float64 reference and through ``backend`` in float32
    (functional seam). ``state=False``: the backend gets no h0/c0 (the seam passes zeros) and the
    reference gets zeros. Returns (got, grads, expected, expected_grads) for assert_matches."""
    from fastrnn.functional import rnn_layer
    from fastrnn.reference import reference_layer

    inputs = make_layer_inputs(cell, T, B, I, H, bias=bias, state=state, device=device)
    lengths = layer_lengths(lengths, T, B)
    if not state:
        inputs[1] = torch.zeros(B, H, dtype=torch.float64, device=device)
        if cell.has_cell_state:
            inputs[2] = torch.zeros(B, H, dtype=torch.float64, device=device)

    def ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return reference_layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, lengths, reverse)

    def fused(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        if not state:
            h0 = c0 = None
        return rnn_layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=lengths, reverse=reverse, backend=backend)

    expected, expected_grads = run_and_grad(ref, inputs)
    got, grads = run_and_grad(fused, [t.float() if t is not None else None for t in inputs])
    return got, grads, expected, expected_grads


STATE_NAMES = ("out", "h_T", "c_T")
INPUT_NAMES = ("x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


def assert_matches(got, grads, expected, expected_grads, tol, given_state=True):
    """Outputs/final states and every gradient within relative error ``tol`` of the reference
    (h0/c0 gradients only when the initial state was given, not zero-filled)."""
    for name, g, e in zip(STATE_NAMES, got, expected):
        if e is None:
            assert g is None, name
            continue
        assert rel_err(g, e) < tol, name
    for name, g, e in zip(INPUT_NAMES, grads, expected_grads):
        if e is None or not given_state and name in ("h0", "c0"):
            continue
        assert rel_err(g, e) < tol, f"grad of {name}"


class LaunchCounter:
    """Counts a kernel backend's launches (its ``LAUNCHES`` counter) from ``with`` to count()."""

    def __init__(self, launches):
        self.launches = launches

    def __enter__(self):
        self.start = dict(self.launches)
        return self

    def __exit__(self, *exc):
        return False

    def count(self, kind):
        return self.launches[kind] - self.start.get(kind, 0)
