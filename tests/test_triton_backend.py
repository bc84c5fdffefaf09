"""The Triton backend against the float64 reference (design.md §6).

Without a GPU the kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set below, at
collection, before the kernel modules are imported (Triton decides at kernel definition whether
to interpret; the kernels use only Triton builtins, so it also works when another test module
imported Triton itself earlier). Other test files are unaffected: on the CPU nothing else runs
Triton kernels. With a CUDA GPU the variable is not set and the same tests run compiled on it.

Every comparison runs the kernels in float32 (ieee dot precision: TF32 is off by default in
torch) on inputs that are the float32 rounding of the float64 reference's inputs, and requires
``|out - ref|max / |ref|max < 1e-4`` for outputs, final states and the gradients of x, h0, c0
and every parameter. Output buffers are NaN-poisoned before each launch (autograd.POISON), and
each test checks that the Triton kernels really launched (autograd.LAUNCHES).
"""

import os

import torch

from triton_env import DEVICE, FP32_TOL, poison_and_ieee  # noqa: F401  (first: Triton's CPU interpreter without a GPU)

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.backends import LayerProblem  # noqa: E402
from fastrnn.cells import CELLS  # noqa: E402
from fastrnn.functional import rnn_layer  # noqa: E402
from fastrnn.reference import reference_layer  # noqa: E402
from fastrnn.triton import backend as triton_backend  # noqa: E402
from fastrnn.triton.capacity import capacity, large_h_capacity, small_h_capacity  # noqa: E402
import kernel_helpers  # noqa: E402
from kernel_helpers import assert_matches, make_layer_inputs, rel_err, run_and_grad, run_layer_case  # noqa: E402


from fastrnn.triton import autograd as triton_autograd  # noqa: E402  (imports Triton)
from fastrnn.triton import launch as triton_launch  # noqa: E402  (the launch regime's test hooks)



def Launches():
    """Counts this backend's kernel launches between enter and count()."""
    return kernel_helpers.LaunchCounter(triton_autograd.LAUNCHES)


LAYER_CASES = {
    **kernel_helpers.LAYER_CASES,  # the cases both kernel backends run; sizes the interpreter runs fast:
    "T6-B17-H24-reverse-lengths": (6, 17, 9, 24, True, "random", True, True),
    "T4-B3-H24-no-bias": (4, 3, 6, 24, True, [4, 1, 2], True, False),
}


def check_layer(cell, T, B, I, H, reverse, lengths, state, bias, kernel="forward"):
    """Forward outputs, final states and all gradients vs the float64 reference; ``kernel`` is
    the LAUNCHES key of the forward kernel expected to run (its backward twin is checked too)."""
    with Launches() as launches:
        got, grads, expected, expected_grads = run_layer_case(
            "triton", cell, T, B, I, H, reverse, lengths, state, bias, DEVICE)
    backward_kernel = kernel.replace("forward", "backward")
    assert launches.count(kernel) >= 1 and launches.count(backward_kernel) >= 1
    assert got[0].dtype == torch.float32
    assert_matches(got, grads, expected, expected_grads, FP32_TOL, given_state=state)


@pytest.mark.parametrize("case", list(LAYER_CASES))
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_layer_matches_reference(cell_name, case):
    check_layer(CELLS[cell_name], *LAYER_CASES[case])


LARGE_H_CASES = {
    # name: (forced plan, (T, B, I, H, reverse, lengths, given state, bias))
    # P = 3 slices of 16 units, one launch per step (the launch boundary is the barrier).
    "step-wise-P3": ({"block_hs": 16, "persistent": False}, (4, 17, 7, 40, True, "random", True, True)),
    "step-wise-P2-forward": ({"block_hs": 16, "persistent": False}, (3, 3, 5, 24, False, [3, 1, 0], True, True)),
    # One batch group: each program loops over both batch tiles every step.
    "step-wise-P3-one-group": ({"block_hs": 16, "persistent": False, "groups": 1},
                               (3, 20, 5, 40, False, "random", True, True)),
    # One launch with the grid barrier after every step; P = 1, so the interpreter cannot deadlock.
    "persistent-P1": ({"block_hs": 64, "persistent": True}, (5, 17, 6, 40, False, "random", True, True)),
}


@pytest.mark.parametrize("case", list(LARGE_H_CASES))
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_large_h_regime_matches_reference(cell_name, case, monkeypatch):
    force, args = LARGE_H_CASES[case]
    if force["persistent"] and DEVICE.type == "cuda":
        force = dict(force, block_hs=16)  # on a GPU the barrier is real: use P > 1
    monkeypatch.setattr(triton_launch, "FORCE_LARGE_H", force)
    check_layer(CELLS[cell_name], *args, kernel="large_h_forward")


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu"])
def test_small_h_split_fma_dot_matches_reference(cell_name):
    """fp32 Elman H=72 pads to 128: the small-H forward cuts its FMA dot into 4 chunks of K
    (launch.kernel_shape; one dot over K=128 spills on sm_90) and must still match."""
    plan = triton_launch.make_plan(3, 72, 1, torch.float32, DEVICE, fma=True)
    assert not plan.large_h and plan.block_h == 128 and plan.fma_ks == 4 and plan.forward_warps == 8
    check_layer(CELLS[cell_name], 3, 3, 5, 72, True, [3, 1, 2], True, True)


def test_kernel_shape_keeps_fp32_fma_dots_out_of_local_memory():
    """The launch shapes bench/kernel_resources.py --triton measured spill-free on sm_90 (the
    three spills it once allowed and the large-H forward below capacity at 4 warps)."""
    shape = triton_launch.kernel_shape
    assert shape(False, 128, 128, 1, True) == (8, 8, 4)  # Elman H=128: 2968 B in one dot
    assert shape(False, 64, 64, 4, True) == (4, 8, 1)  # LSTM H=64: 416 B at 4 warps
    assert shape(True, 512, 16, 3, True) == (8, 8, 16)  # GRU H=512: 2216 B in one dot
    assert shape(True, 128, 16, 4, True) == (4, 8, 1)  # LSTM H=128: 240 B at 4 warps
    assert shape(True, 64, 16, 3, True)[2] == 4  # chunks stay >= 16 deep (tl.dot's minimum)
    assert shape(True, 16, 16, 3, True)[2] == 1
    for large_h, block_h in ((False, 128), (True, 512)):  # tensor-core dots keep their shapes
        warps, forward_warps, fma_ks = shape(large_h, block_h, 16 if large_h else block_h, 3, False)
        assert forward_warps == warps and fma_ks == 1


def test_large_h_chosen_beyond_small_capacity():
    """LSTM fp32 H=72 exceeds the small-H capacity (64): the large-H kernels run unforced."""
    assert small_h_capacity(4, 4) < 72
    check_layer(CELLS["lstm"], 3, 3, 5, 72, False, [3, 2, 1], True, True, kernel="large_h_forward")


def test_large_h_plan(monkeypatch):
    """Regime, batch groups and mode selection as on an H100 (132 SMs), without launching."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(triton_launch, "_num_sms", lambda device: 132)
    cuda = torch.device("cuda")
    plan = triton_launch.make_plan(16, 768, 4, torch.bfloat16, cuda)  # design.md's anchor problem
    assert plan.large_h and plan.persistent and plan.block_hs == 16 and plan.slices(768) == 48
    assert plan.groups == 1 and plan.block_h == 1024
    plan = triton_launch.make_plan(1024, 512, 4, torch.bfloat16, cuda)  # 64 batch tiles
    assert plan.persistent and plan.groups == 4 and plan.slices(512) * plan.groups <= 132
    monkeypatch.setattr(triton_launch, "_num_sms", lambda device: 16)  # a small GPU
    plan = triton_launch.make_plan(16, 512, 4, torch.bfloat16, cuda)  # 32 slices > 16 SMs
    assert plan.large_h and not plan.persistent and plan.groups == 1
    assert not triton_launch.make_plan(16, 64, 4, torch.float32, cuda).large_h
    assert triton_launch.make_plan(16, 72, 4, torch.float32, cuda).large_h
    monkeypatch.setattr(triton_launch, "_num_sms", lambda device: 132)
    monkeypatch.setenv(triton_launch.STEPWISE_ENV, "1")  # the safety valve
    assert not triton_launch.make_plan(16, 768, 4, torch.bfloat16, cuda).persistent


def test_dot_precision_follows_torch_tf32_flag():
    assert triton_autograd._dot_precision(torch.float32) == "ieee"  # the fixture turned TF32 off
    torch.backends.cuda.matmul.allow_tf32 = True  # the fixture restores it
    assert triton_autograd._dot_precision(torch.float32) == "tf32"
    assert triton_autograd._dot_precision(torch.bfloat16) == "tf32"  # only matters for fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compilation caches exist only on a GPU")
def test_no_recompilation_per_batch_or_length():
    cell = CELLS["lstm"]
    kernel = triton_autograd.recurrent_forward_kernel

    def compiled():
        return sum(len(cache[0]) for cache in kernel.device_caches.values())

    def run(T, B):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh = [t.float() for t in make_layer_inputs(cell, T, B, 5, 24, device=DEVICE)]
        rnn_layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend="triton")

    run(5, 3)
    before = compiled()
    run(7, 17)
    run(1, 1)
    assert compiled() == before


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_module_packed_bidirectional_two_layers(mode):
    """fastrnn modules with PackedSequence on backend="triton" vs backend="reference" in float64."""
    I, H = 6, 24
    cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN_TANH": fastrnn.RNN}[mode]
    torch.manual_seed(0)
    model = cls(I, H, num_layers=2, bidirectional=True, backend="triton").to(DEVICE)
    ref_model = cls(I, H, num_layers=2, bidirectional=True, backend="reference").to(DEVICE).double()
    ref_model.load_state_dict(model.state_dict())

    lengths = torch.tensor([5, 2, 4, 1])
    x64 = torch.randn(5, 4, I, dtype=torch.float64, device=DEVICE)
    num_states = 4  # layers * directions
    h0 = torch.randn(num_states, 4, H, dtype=torch.float64, device=DEVICE)
    c0 = torch.randn(num_states, 4, H, dtype=torch.float64, device=DEVICE)

    def run(m, dtype):
        x = x64.to(dtype, copy=True).requires_grad_()
        hx = (h0.to(dtype, copy=True).requires_grad_(), c0.to(dtype, copy=True).requires_grad_())
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, state = m(packed, hx if mode == "LSTM" else hx[0])
        states = state if mode == "LSTM" else (state,)
        g = torch.Generator().manual_seed(5)
        loss = (out.data.double() * torch.randn(out.data.shape, generator=g, dtype=torch.float64).to(DEVICE)).sum()
        for s in states:
            loss = loss + (s.double() * torch.randn(s.shape, generator=g, dtype=torch.float64).to(DEVICE)).sum()
        loss.backward()
        grads = [x.grad, hx[0].grad] + ([hx[1].grad] if mode == "LSTM" else [])
        return [out.data, *states], grads + [p.grad for p in m.parameters()]

    expected, expected_grads = run(ref_model, torch.float64)
    with Launches() as launches:
        got, grads = run(model, torch.float32)
    assert launches.count("forward") == 4 and launches.count("backward") == 4
    for g, e in zip(got, expected):
        assert rel_err(g, e) < FP32_TOL
    assert len(grads) == len(expected_grads)
    for (name, _), g, e in zip([("x", 0), ("h0", 0), ("c0", 0)][: 3 if mode == "LSTM" else 2]
                               + list(model.named_parameters()), grads, expected_grads):
        assert rel_err(g, e) < FP32_TOL, f"grad of {name}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cell_name,regime", [("lstm", "small"), ("gru", "small"), ("rnn_tanh", "small"),
                                              ("lstm", "large"), ("gru", "large")])
def test_half_precision(cell_name, regime, dtype, monkeypatch):
    """fp16/bf16 storage, fp32 accumulation and state: error at most ~2x the reference's own
    error in the same dtype (both measured against float64), and never above 1e-2."""
    kernel = "forward"
    if regime == "large":
        monkeypatch.setattr(triton_launch, "FORCE_LARGE_H", {"block_hs": 16, "persistent": False})
        kernel = "large_h_forward"
    cell = CELLS[cell_name]
    inputs = make_layer_inputs(cell, 5, 3, 7, 40, device=DEVICE)
    lengths = torch.tensor([5, 2, 4])
    lowp = [t.to(dtype) if t is not None else None for t in inputs]

    def ref(*args):
        return reference_layer(cell, *args, None, lengths, False)

    def tri(*args):
        return rnn_layer(cell, *args[:2], args[2], *args[3:], lengths=lengths, backend="triton")

    expected, expected_grads = run_and_grad(ref, [t.double() if t is not None else None for t in lowp])
    ref_lowp, ref_lowp_grads = run_and_grad(ref, lowp)
    with Launches() as launches:
        got, grads = run_and_grad(tri, lowp)
    assert launches.count(kernel) >= 1
    assert got[0].dtype == dtype
    for g, r, e in zip(list(got) + grads, list(ref_lowp) + ref_lowp_grads, list(expected) + expected_grads):
        if e is None:
            continue
        err = rel_err(g, e)
        assert err < 1e-2
        assert err < 2 * rel_err(r, e) + 2e-3


def test_proj_size_raises_backend_error():
    model = fastrnn.LSTM(8, 16, proj_size=4, backend="triton").to(DEVICE)
    with pytest.raises(fastrnn.BackendError, match="proj_size"):
        model(torch.randn(3, 2, 8, device=DEVICE))


def test_auto_skips_triton_with_reason(auto_backend):
    model = fastrnn.LSTM(8, 16).to(DEVICE)
    x = torch.randn(3, 2, 8, device=DEVICE)
    choice = model.explain_backend(x)
    assert choice.backend == "torch"
    assert "triton" in choice.skipped
    assert "measured faster than torch" in choice.skipped["triton"]
    assert "triton" in str(choice)
    with Launches() as launches:
        model(x)
    assert launches.count("forward") == 0


def test_unavailable_reason(monkeypatch):
    assert triton_backend.unavailable() is None
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert "TRITON_INTERPRET" in triton_backend.unavailable()


def _problem(**changes):
    base = dict(cell=CELLS["lstm"], device=DEVICE, dtype=torch.float32, input_size=8, hidden_size=16,
                proj_size=0, batch_size=2, seq_len=3, has_bias=True, has_lengths=False)
    base.update(changes)
    return LayerProblem(**base)


def test_unsupported_reasons(monkeypatch):
    unsupported = triton_backend.unsupported
    assert unsupported(_problem()) is None
    assert "float64" in unsupported(_problem(dtype=torch.float64))
    assert "proj_size" in unsupported(_problem(proj_size=4))
    lstm_fp32 = capacity(4, 4)
    assert unsupported(_problem(hidden_size=lstm_fp32)) is None
    assert "capacity" in unsupported(_problem(hidden_size=lstm_fp32 + 1))
    assert unsupported(_problem(hidden_size=capacity(4, 2), dtype=torch.bfloat16)) is None
    assert "2^31" in unsupported(_problem(seq_len=2**16, batch_size=2**15))
    with monkeypatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "0")
        assert "TRITON_INTERPRET" in unsupported(_problem(device=torch.device("cpu")))
    # A named backend that cannot run raises, never substitutes.
    model = fastrnn.GRU(8, capacity(3, 4) + 1, backend="triton").to(DEVICE)
    with pytest.raises(fastrnn.BackendError, match="capacity"):
        model(torch.randn(2, 1, 8, device=DEVICE))


def test_capacity_table():
    """The documented numbers in fastrnn/triton/capacity.py."""
    assert [small_h_capacity(g, 4) for g in (1, 3, 4)] == [128, 64, 64]
    assert [small_h_capacity(g, 2) for g in (1, 3, 4)] == [256, 128, 64]
    assert [large_h_capacity(g, 4) for g in (1, 3, 4)] == [1024, 512, 512]
    assert [large_h_capacity(g, 2) for g in (1, 3, 4)] == [2048, 1024, 1024]


def test_empty_sequence_passes_state_through():
    cell = CELLS["lstm"]
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = [t.float() for t in make_layer_inputs(cell, 2, 3, 5, 24, device=DEVICE)]
    out, h, c = rnn_layer(cell, x[:0], h0, c0, w_ih, w_hh, b_ih, b_hh, backend="triton")
    assert out.shape == (0, 3, 24)
    assert torch.equal(h, h0) and torch.equal(c, c0)


def test_kernels_compile_for_h100():
    """The compiled path (never taken by the interpreter) builds for sm_90 and fits its limits:
    Triton compiles ahead of time without a GPU (see fastrnn/triton/resources.py)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "fastrnn.triton.resources", "--quick"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("smem=") == 4


def test_import_fastrnn_does_not_import_triton():
    code = "import sys, fastrnn; assert 'triton' not in sys.modules, 'fastrnn imported triton'"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
