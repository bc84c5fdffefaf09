"""Seeded differential fuzzing of the Triton backend against the float64 reference: random tiny
layer problems (cell, direction, lengths with zeros, batch 0, given / absent / non-contiguous
initial states, bias, both regimes), outputs, final states and every gradient within the fp32
tolerance of test_triton_backend.py. Runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
below) or compiled on a GPU. A failing case names its seed. Bounded: about ten seconds.
"""

import os
import random

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastrnn.cells import CELLS  # noqa: E402
from fastrnn.functional import rnn_layer  # noqa: E402
from fastrnn.reference import reference_layer  # noqa: E402
from fastrnn.triton import backend as triton_backend  # noqa: E402
from kernel_helpers import assert_matches, make_layer_inputs, run_and_grad  # noqa: E402

pytest.importorskip("triton")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and not triton_backend.interpreting():
    pytest.skip("no GPU and TRITON_INTERPRET is set to something other than 1", allow_module_level=True)

from fastrnn.triton import autograd as triton_autograd  # noqa: E402  (imports Triton)

CASES = 24
FP32_TOL = 1e-4


@pytest.fixture(autouse=True)
def poison_and_ieee(monkeypatch):
    monkeypatch.setattr(triton_autograd, "POISON", True)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = tf32


@pytest.mark.parametrize("seed", range(CASES))
def test_triton_matches_reference(seed, monkeypatch):
    rng = random.Random(7000 + seed)
    cell = CELLS[rng.choice(["lstm", "lstm", "gru", "rnn_tanh", "rnn_relu"])]
    T, B, I, H = rng.randint(1, 4), rng.choice([0, 1, 2, 3]), rng.randint(1, 5), rng.choice([8, 16, 24])
    reverse = rng.random() < 0.5
    state = rng.choice(["given", "given-non-contiguous", "absent"])
    bias = rng.random() < 0.8
    regime = rng.choice(["small", "small", "large-step-wise"])
    if regime != "small":
        monkeypatch.setattr(triton_autograd, "FORCE_LARGE_H", {"block_hs": 16, "persistent": False})
    lengths = None
    if B and rng.random() < 0.5:
        lengths = torch.tensor([rng.randint(0, T) for _ in range(B)])
    inputs = make_layer_inputs(cell, T, B, I, H, device=DEVICE, bias=bias, seed=seed)
    if state == "absent":
        inputs[1] = torch.zeros(B, H, dtype=torch.float64, device=DEVICE)
        if cell.has_cell_state:
            inputs[2] = torch.zeros(B, H, dtype=torch.float64, device=DEVICE)
    elif state == "given-non-contiguous":
        inputs[1:3] = [t.t().contiguous().t() if t is not None else None for t in inputs[1:3]]

    def ref(x, h0, c0, *weights):
        return reference_layer(cell, x, h0, c0, *weights, None, lengths, reverse)

    def tri(x, h0, c0, *weights):
        if state == "absent":
            h0 = c0 = None
        return rnn_layer(cell, x, h0, c0, *weights, lengths=lengths, reverse=reverse, backend="triton")

    expected, expected_grads = run_and_grad(ref, inputs)
    got, grads = run_and_grad(tri, [t.float() if t is not None else None for t in inputs])
    if B == 0:  # nothing to compare in size; gradients must exist, zero, as the reference's
        for k, (g, e) in enumerate(zip(grads, expected_grads)):
            if state == "absent" and k in (1, 2):  # zeros made inside rnn_layer: no leaf to reach
                continue
            assert (g is None) == (e is None)
            if e is not None:
                assert g.shape == e.shape and not g.any() and not e.any()
        return
    assert_matches(got, grads, expected, expected_grads, FP32_TOL, given_state=state != "absent")
