"""Seeded differential fuzzing of the Triton backend against the float64 reference: random tiny
layer problems (cell, direction, lengths with zeros, batch 0, given / absent / non-contiguous
initial states, bias, both regimes), outputs, final states and every gradient within the fp32
tolerance of test_triton_backend.py. Runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set
below) or compiled on a GPU. A failing case names its seed. Bounded: about ten seconds.
"""

import random

import torch

from triton_env import DEVICE, FP32_TOL, poison_and_ieee  # noqa: F401  (first: Triton's CPU interpreter without a GPU)

import pytest  # noqa: E402

from fastrnn.cells import CELLS  # noqa: E402
from fastrnn.functional import rnn_layer  # noqa: E402
from fastrnn.reference import reference_layer  # noqa: E402
from fastrnn.triton import backend as triton_backend  # noqa: E402
from kernel_helpers import assert_matches, make_layer_inputs, run_and_grad  # noqa: E402


from fastrnn.triton import autograd as triton_autograd  # noqa: E402  (imports Triton)
from fastrnn.triton import launch as triton_launch  # noqa: E402  (the launch regime's test hooks)

CASES = 24


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
        monkeypatch.setattr(triton_launch, "FORCE_LARGE_H", {"block_hs": 16, "persistent": False})
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


MODULE_CASES = 12


@pytest.mark.parametrize("seed", range(MODULE_CASES))
def test_triton_module_matches_reference(seed):
    """Whole modules on backend="triton" (float32) against backend="reference" (float64): layers,
    directions, batch_first, padded / packed / unbatched input, batch 0, given (possibly
    transposed) or absent states, train or eval mode (no dropout: its masks depend on the dtype)."""
    import fastrnn
    from torch.nn.utils.rnn import pack_padded_sequence

    from helpers import flat
    from kernel_helpers import rel_err

    rng = random.Random(9000 + seed)
    cls = rng.choice([fastrnn.LSTM, fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN])
    cfg = dict(num_layers=rng.choice([1, 2]), bidirectional=rng.random() < 0.5, batch_first=rng.random() < 0.5,
               bias=rng.random() < 0.8)
    I, H, T = rng.randint(1, 4), rng.choice([8, 16]), rng.randint(1, 3)
    form = rng.choice(["padded", "packed", "unbatched"])
    B = rng.choice([0, 2, 3]) if form == "padded" else rng.choice([2, 3])
    torch.manual_seed(seed)
    model = cls(I, H, backend="triton", **cfg).to(DEVICE)
    ref = cls(I, H, backend="reference", **cfg).to(DEVICE).double()
    ref.load_state_dict(model.state_dict())
    model.train(rng.random() < 0.5)
    gen = torch.Generator().manual_seed(seed)
    shape = (T, I) if form == "unbatched" else ((B, T, I) if cfg["batch_first"] else (T, B, I))
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE)
    lengths = torch.tensor([T] + [rng.randint(1, T) for _ in range(B - 1)]) if form == "packed" else None
    n = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    hx = None
    if rng.random() < 0.7:
        lead = (n,) if form == "unbatched" else (n, B)
        states = [torch.randn(lead + (H,), generator=gen, dtype=torch.float64).to(DEVICE) for _ in range(2)]
        if form != "unbatched" and rng.random() < 0.5:  # batch-first storage, passed transposed
            states = [s.transpose(0, 1).contiguous().transpose(0, 1) for s in states]
        hx = tuple(states) if cls is fastrnn.LSTM else states[0]

    def run(m, dtype):
        xl = x.to(dtype).requires_grad_()
        inp = xl
        if lengths is not None:
            inp = pack_padded_sequence(xl, lengths, batch_first=cfg["batch_first"], enforce_sorted=False)
        leaves = None
        if hx is not None:
            leaves = [h.to(dtype).requires_grad_() for h in (hx if isinstance(hx, tuple) else (hx,))]
        result = m(inp) if hx is None else m(inp, tuple(leaves) if len(leaves) == 2 else leaves[0])
        outs = flat(result)
        g = torch.Generator().manual_seed(1)
        loss = sum((y.double() * torch.randn(y.shape, generator=g, dtype=torch.float64).to(DEVICE)).sum()
                   for y in outs)
        loss.backward()
        grads = [xl.grad] + [h.grad for h in leaves or []] + [p.grad for p in m.parameters()]
        return outs, grads

    launches = dict(triton_autograd.LAUNCHES)
    got, got_grads = run(model, torch.float32)
    ran = {k: triton_autograd.LAUNCHES[k] - launches.get(k, 0) for k in ("forward", "backward")}
    assert ran == ({"forward": 0, "backward": 0} if B == 0 else {"forward": n, "backward": n})
    expected, expected_grads = run(ref, torch.float64)
    for g, e in zip(got + got_grads, expected + expected_grads):
        assert g is not None and g.shape == e.shape
        if e.numel() == 0 or not e.any():
            assert not g.any()
        else:
            assert rel_err(g, e) < FP32_TOL
