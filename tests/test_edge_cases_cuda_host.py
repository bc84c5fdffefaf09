"""The CUDA backend's host code (fastrnn/cuda/autograd.py and the fastrnn/fused.py it shares with
Triton) on the CPU, with a stand-in for the compiled kernels: non-contiguous states, an empty
batch, double backward (issue 13). The CUDA kernels themselves need a GPU (test_cuda_backend.py);
here ``fastrnn._C`` is replaced by :class:`StandInKernels`, which checks what launch.h checks
(contiguous tensors) and computes the kernels' results from the cell equations, so the whole
host path around them (projection GEMM, saved tensors, gradient GEMMs, double backward) is
compared with the float64 reference.
"""

import importlib.util
import os
import sys

import pytest
import torch

from fastrnn.cells import CELLS
from fastrnn.fused import prev_state
from fastrnn.reference import reference_layer
from kernel_helpers import INPUT_NAMES, assert_matches, make_layer_inputs, run_and_grad

BY_ID = {cell.kernel_id: cell for cell in CELLS.values()}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTOGRAD_PY = os.path.join(ROOT, "fastrnn", "cuda", "autograd.py")
TOL = 1e-10  # float64 throughout: the stand-in and the reference differ by rounding only


class StandInKernels:
    """fastrnn._C's rnn_forward / rnn_backward in plain torch (see the module docstring)."""

    def __init__(self):
        self.launches = []
        self._stash = {}  # saved buffer's data_ptr -> forward inputs, for the backward

    @staticmethod
    def _check_contiguous(fn, **tensors):
        for name, t in tensors.items():  # launch.h: TORCH_CHECK(t.is_contiguous(), ...)
            assert t is None or t.is_contiguous(), f"{fn}: {name} must be contiguous"

    @staticmethod
    def _recurrence(cell, reverse, gx, w_hh, b_hn, h0, c0, lengths):
        """The kernels' recurrence on the projected input gx: the reference layer with an
        identity input weight, and b_hn as the GRU's recurrent n-block bias."""
        hidden = w_hh.shape[1]
        eye = torch.eye(gx.shape[-1], dtype=gx.dtype)
        b_hh = None
        if cell.name == "gru":
            b_hh = torch.cat([gx.new_zeros(2 * hidden), b_hn])
        return reference_layer(cell, gx, h0, c0, eye, w_hh, None, b_hh, None, lengths, reverse)

    def rnn_forward(self, cell_id, reverse, tf32, gx, w_hh, b_hn, h0, c0, lengths):
        self._check_contiguous("rnn_forward", gx=gx, w_hh=w_hh, b_hn=b_hn, h0=h0, c0=c0, lengths=lengths)
        self.launches.append("forward")
        cell = BY_ID[cell_id]
        out, h_n, c_n = self._recurrence(cell, reverse, gx, w_hh, b_hn, h0, c0, lengths)
        saved = torch.zeros(1)
        self._stash[saved.data_ptr()] = (gx, w_hh, b_hn, h0, c0)
        return [out, h_n, c_n if c_n is not None else torch.empty(0), saved]

    def rnn_backward(self, cell_id, reverse, tf32, dout, dh_n, dc_n, w_hh, saved, lengths):
        self._check_contiguous("rnn_backward", dout=dout, dh_n=dh_n, dc_n=dc_n, w_hh=w_hh, lengths=lengths)
        self.launches.append("backward")
        cell = BY_ID[cell_id]
        gx, _, b_hn, h0, c0 = self._stash[saved.data_ptr()]
        leaves = [t.detach().requires_grad_() for t in (gx, h0) + ((c0,) if c0 is not None else ())]
        with torch.enable_grad():
            out, h_n, c_n = self._recurrence(cell, reverse, leaves[0], w_hh, b_hn, *leaves[1:],
                                             *([None] if c0 is None else []), lengths)
            outputs, grads = [out, h_n], [dout, dh_n]
            if c_n is not None:
                outputs.append(c_n)
                grads.append(dc_n)
            found = torch.autograd.grad(outputs, leaves, grads, allow_unused=True)
        dgx, dh0 = found[0], found[1]
        dc0 = found[2] if c0 is not None else torch.empty(0)
        dghn = torch.empty(0)
        if cell.name == "gru":  # dgh_n = da_n * r, r = sigmoid(gx_r + W_hr h_prev)
            hidden = w_hh.shape[1]
            h_prev = prev_state(out.detach(), h0, lengths, reverse)
            r = torch.sigmoid(gx[..., :hidden] + h_prev @ w_hh[:hidden].t())
            dghn = dgx[..., 2 * hidden:] * r
        return [dgx, dghn, dh0, dc0]


@pytest.fixture
def cuda_autograd(monkeypatch):
    """A private copy of fastrnn/cuda/autograd.py whose _C is a StandInKernels."""
    kernels = StandInKernels()
    monkeypatch.setitem(sys.modules, "fastrnn._C", kernels)  # for its `from fastrnn import _C`
    spec = importlib.util.spec_from_file_location("fastrnn.cuda._autograd_host_test", AUTOGRAD_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_C", kernels)  # where a real, built _C was imported already
    module.kernels = kernels
    return module


def layer(module, cell, lengths=None, reverse=False):
    def run(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return module.cuda_layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, lengths, reverse)
    return run


def column_major(t):
    return None if t is None else t.t().contiguous().t()


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "rnn_relu"])
def test_host_path_matches_reference_with_non_contiguous_states(cuda_autograd, cell_name):
    """Item 1: h0, c0 non-contiguous (and reverse, lengths): the host code hands the kernels
    contiguous tensors and gets every gradient right."""
    cell = CELLS[cell_name]
    inputs = make_layer_inputs(cell, 4, 3, 5, 6, device="cpu")
    inputs[1], inputs[2] = column_major(inputs[1]), column_major(inputs[2])
    lengths = torch.tensor([2, 4, 0])
    expected, expected_grads = run_and_grad(lambda *a: reference_layer(cell, *a, None, lengths, True), inputs)
    got, grads = run_and_grad(layer(cuda_autograd, cell, lengths, True), inputs)
    assert cuda_autograd.kernels.launches == ["forward", "backward"]
    assert_matches(got, grads, expected, expected_grads, TOL)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_batch_0_gives_zero_gradients(cuda_autograd, cell_name):
    """Item 2: an empty batch stays in the graph (no kernel launch needed)."""
    cell = CELLS[cell_name]
    inputs = make_layer_inputs(cell, 3, 0, 5, 6, device="cpu")
    got, grads = run_and_grad(layer(cuda_autograd, cell), inputs)
    assert got[0].shape == (3, 0, 6) and got[0].grad_fn is not None
    for name, g, t in zip(INPUT_NAMES, grads, inputs):
        if t is not None:
            assert g is not None and torch.equal(g, torch.zeros_like(t)), name


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "rnn_tanh"])
def test_double_backward_matches_reference(cuda_autograd, cell_name):
    """Item 3: a gradient penalty through the CUDA autograd Function equals the reference's
    (gradgradcheck-grade agreement in float64). The recording backward (create_graph) runs the
    reference, not the kernel; the outer backward reaches the layer again through sin's second
    derivative (which reads ``out``), an ordinary backward: that one runs the kernel."""
    cell = CELLS[cell_name]
    inputs = make_layer_inputs(cell, 3, 2, 4, 5, device="cpu")
    lengths = torch.tensor([3, 1])

    def penalty_grads(fn):
        leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
        out, h, c = fn(*leaves)
        first = torch.autograd.grad(out.sin().sum() + h.pow(2).sum(), [leaves[0], leaves[1]], create_graph=True)
        launches.append(list(getattr(fn, "kernels", [])))
        penalty = sum((g.norm() - 1) ** 2 for g in first)
        wanted = [t for t in leaves if t is not None]
        return torch.autograd.grad(penalty, wanted)

    launches = []
    expected = penalty_grads(lambda *a: reference_layer(cell, *a, None, lengths, False))
    fused = layer(cuda_autograd, cell, lengths)
    fused.kernels = cuda_autograd.kernels.launches
    got = penalty_grads(fused)
    assert launches[1] == ["forward"] and cuda_autograd.kernels.launches == ["forward", "backward"]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=TOL, atol=TOL)


def test_gradgradcheck(cuda_autograd):
    cell = CELLS["gru"]
    inputs = [t.detach().requires_grad_() for t in make_layer_inputs(cell, 2, 2, 3, 3, device="cpu") if t is not None]
    fn = layer(cuda_autograd, cell, torch.tensor([2, 1]))

    def outputs(x, h0, w_ih, w_hh, b_ih, b_hh):
        out, h, _ = fn(x, h0, None, w_ih, w_hh, b_ih, b_hh)
        return out, h

    assert torch.autograd.gradgradcheck(outputs, inputs)


# ----------------------------------------------------------------------------- on a GPU

GPU_READY = torch.cuda.is_available() and importlib.util.find_spec("fastrnn._C") is not None
needs_gpu = pytest.mark.skipif(not GPU_READY, reason="needs a CUDA GPU and the built extension fastrnn._C")


@needs_gpu
@pytest.mark.parametrize("batch", [3, 0])
def test_cuda_kernels_non_contiguous_states_and_batch_0(batch):
    from fastrnn.functional import rnn_layer

    cell = CELLS["lstm"]
    inputs = make_layer_inputs(cell, 4, batch, 5, 24, device="cuda")
    inputs[1], inputs[2] = column_major(inputs[1]), column_major(inputs[2])
    expected, expected_grads = run_and_grad(lambda *a: reference_layer(cell, *a, None, None, False), inputs)
    got, grads = run_and_grad(lambda *a: rnn_layer(cell, *a, backend="cuda"),
                              [t.float() if t is not None else None for t in inputs])
    if batch:
        assert_matches(got, grads, expected, expected_grads, 1e-4)
    else:
        assert all(g is not None and g.abs().sum() == 0 for g in grads if g is not None)
        assert [g is None for g in grads] == [g is None for g in expected_grads]
