"""The kernel backends (Triton, CUDA) at real sizes on a GPU, against the float64 reference and
against torch.nn (cuDNN) in the same dtype (issue: "the same tests at real sizes").

For every output, final state and gradient (x, h0, c0, every parameter):

    err(backend) <= 2 * err(torch.nn) + floor      err = |y - y64|max / |y64|max  (design.md §6)

with y64 the float64 reference on the same (rounded) inputs; floor = 1e-4 keeps two tiny fp32
errors from failing on a tie. TF32 is off for both (torch's matmul and cuDNN flags). Sizes: T=1024, B=16, I=H=768 (H capped at the backend's capacity for the cell and dtype), and
the largest H the backend takes at T=64; and T=128, B=130, H=768 with per-sequence lengths in
both directions (several batch tiles per step) against the reference alone (design.md §6's
bounds: torch.nn takes lengths only through packing). Outputs are NaN-poisoned by both backends' test hooks.

Without a GPU the kernel cases skip with a reason; one CPU case runs the same harness with the
reference backend at a small size, so the harness itself is exercised in CI.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from fastrnn import backends
from fastrnn.backends import LayerProblem
from fastrnn.cells import CELLS
from fastrnn.functional import rnn_layer
from fastrnn.reference import reference_layer
from kernel_helpers import INPUT_NAMES, STATE_NAMES, make_layer_inputs, rel_err, run_and_grad

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="kernels at real sizes need a CUDA GPU (none on this machine)")
TORCH_NN = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_nn_layer(cell_name, input_size, hidden_size, device, dtype):
    """fn(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (out, h_T, c_T) through torch.nn (cuDNN on a GPU)."""
    module = TORCH_NN[cell_name](input_size, hidden_size).to(device, dtype)

    def fn(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
        hx = (h0[None], c0[None]) if cell_name == "lstm" else h0[None]
        with warnings.catch_warnings():  # weights not in one flat cuDNN buffer: fine here
            warnings.simplefilter("ignore", UserWarning)
            out, state = torch.func.functional_call(module, params, (x, hx))
        if cell_name == "lstm":
            return out, state[0][0], state[1][0]
        return out, state[0], None

    return fn


def largest_hidden(backend: str, cell_name: str, dtype, device, limit: int = 8192) -> int:
    """The largest H the backend's own support check accepts (it grows monotonically)."""
    check = backends.get_backend(backend).unsupported

    def ok(h):
        return check(LayerProblem(CELLS[cell_name], device, dtype, h, h, 0, 16, 64, True, False)) is None

    lo, hi = 0, limit + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def check_against_torch(backend, cell_name, dtype, T, B, H, device, poison):
    cell = CELLS[cell_name]
    inputs64 = make_layer_inputs(cell, T, B, H, H, device=device, seed=T + H)
    lowp = [t.to(dtype) if t is not None else None for t in inputs64]
    truth = [t.double() if t is not None else None for t in lowp]  # the rounded inputs, in float64

    def ref(*args):
        return reference_layer(cell, *args, None, None, False)

    def ours(*args):
        with poison():
            return rnn_layer(cell, *args, backend=backend)

    expected, expected_grads = run_and_grad(ref, truth)
    theirs, theirs_grads = run_and_grad(torch_nn_layer(cell_name, H, H, device, dtype), lowp)
    got, grads = run_and_grad(ours, lowp)
    assert got[0].dtype == dtype
    names = list(STATE_NAMES) + [f"grad of {n}" for n in INPUT_NAMES]
    failures = []
    for name, g, t, e in zip(names, list(got) + grads, list(theirs) + theirs_grads,
                             list(expected) + expected_grads):
        if e is None:
            continue
        err, torch_err = rel_err(g, e), rel_err(t, e)
        bound = 2 * torch_err + 1e-4
        if not err <= bound:
            failures.append(f"{name}: {err:.2e} (torch.nn {torch_err:.2e}, bound {bound:.2e})")
    assert not failures, f"{backend} {cell_name} {dtype} T={T} B={B} H={H}: " + "; ".join(failures)


def _poison(backend):
    """A context manager that NaN-poisons the backend's outputs (its test hook)."""

    if backend == "cuda":
        from fastrnn import _C

        @contextlib.contextmanager
        def poison():
            _C.set_poison(True)
            try:
                yield
            finally:
                _C.set_poison(False)

        return poison
    if backend == "triton":
        from fastrnn.triton import autograd as triton_autograd

        @contextlib.contextmanager
        def poison():
            old, triton_autograd.POISON = triton_autograd.POISON, True
            try:
                yield
            finally:
                triton_autograd.POISON = old

        return poison
    return contextlib.nullcontext


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _require(backend):
    why = backends.get_backend(backend).unavailable()
    if why:
        pytest.skip(f"backend {backend!r} unavailable here: {why}")


@needs_gpu
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_sequence_1024(backend, cell_name, dtype_name, no_tf32):
    _require(backend)
    device, dtype = torch.device("cuda"), DTYPES[dtype_name]
    H = min(768, largest_hidden(backend, cell_name, dtype, device))
    check_against_torch(backend, cell_name, dtype, 1024, 16, H, device, _poison(backend))


@needs_gpu
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_largest_hidden(backend, cell_name, dtype_name, no_tf32):
    _require(backend)
    device, dtype = torch.device("cuda"), DTYPES[dtype_name]
    H = largest_hidden(backend, cell_name, dtype, device)
    assert H > 0, f"{backend} takes no hidden size at all for {cell_name} {dtype_name}"
    check_against_torch(backend, cell_name, dtype, 64, 5, H, device, _poison(backend))


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_harness_on_cpu_with_reference(cell_name):
    """The harness above, run by the reference backend in float32 on the CPU (CI has no GPU)."""
    assert largest_hidden("reference", cell_name, torch.float32, torch.device("cpu"), limit=64) == 64
    check_against_torch("reference", cell_name, torch.float32, 16, 3, 24, torch.device("cpu"), _poison("reference"))


# design.md §6's bounds where torch.nn has no same-shaped twin to compare with (per-sequence
# lengths run through packing there): relative error against the float64 reference.
ABS_TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def check_directions_and_lengths(backend, cell_name, dtype, T, B, H, reverse, device, poison):
    """One layer-direction with per-sequence lengths (0, full and random) against the float64
    reference: outputs, final states and every gradient."""
    cell = CELLS[cell_name]
    inputs64 = make_layer_inputs(cell, T, B, H, H, device=device, seed=T + B + H + reverse)
    lowp = [t.to(dtype) if t is not None else None for t in inputs64]
    truth = [t.double() if t is not None else None for t in lowp]
    generator = torch.Generator().manual_seed(B)
    lengths = torch.randint(0, T + 1, (B,), generator=generator)
    lengths[0], lengths[-1] = 0, T

    def ref(*args):
        return reference_layer(cell, *args, None, lengths.to(device), reverse)

    def ours(*args):
        with poison():
            return rnn_layer(cell, *args, lengths=lengths.to(device), reverse=reverse, backend=backend)

    expected, expected_grads = run_and_grad(ref, truth)
    got, grads = run_and_grad(ours, lowp)
    names = list(STATE_NAMES) + [f"grad of {n}" for n in INPUT_NAMES]
    failures = [f"{name}: {rel_err(g, e):.2e}" for name, g, e in zip(names, list(got) + grads,
                                                                    list(expected) + expected_grads)
                if e is not None and not rel_err(g, e) < ABS_TOL[dtype]]
    assert not failures, (f"{backend} {cell_name} {dtype} T={T} B={B} H={H} reverse={reverse}: "
                          + "; ".join(failures))


@needs_gpu
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_lengths_both_directions_several_batch_tiles(backend, cell_name, dtype_name, reverse, no_tf32):
    """The target H=768 (6 units a block for the CUDA kernels on 132 SMs), B=130: several batch
    tiles per step (Triton: 9 tiles of 16; CUDA: 3 balanced passes of at most 64 rows), lengths,
    both directions."""
    _require(backend)
    device, dtype = torch.device("cuda"), DTYPES[dtype_name]
    H = min(768, largest_hidden(backend, cell_name, dtype, device))
    check_directions_and_lengths(backend, cell_name, dtype, 128, 130, H, reverse, device, _poison(backend))


@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_harness_on_cpu_with_reference(reverse):
    """The lengths harness above, run by the reference backend on the CPU (CI has no GPU)."""
    check_directions_and_lengths("reference", "lstm", torch.float32, 8, 5, 16, reverse,
                                 torch.device("cpu"), _poison("reference"))
