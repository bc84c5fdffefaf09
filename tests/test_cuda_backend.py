"""The CUDA C++ backend (backend="cuda") against the float64 reference (design.md §6).

Two parts:
- Without a GPU (runs everywhere): registration, the reasons ``auto`` skips it and a named
  request fails on CPU tensors, lazy import of fastrnn._C, the functions fastrnn._C exposes (when
  built), and that fastrnn/cuda/capacity.py agrees with the launcher's plan (kernels/layout.cuh,
  through fastrnn._C.plan).
- With a CUDA GPU: the equivalence suite. The kernels run in float32 on the float32 rounding of
  the float64 reference's inputs and must reach ``|out - ref|max / |ref|max < 1e-4`` for outputs,
  final states and the gradients of x, h0, c0 and every parameter; bf16/fp16 at most ~2x the
  reference's own error in that dtype and never above 1e-2. All kernel buffers are NaN-poisoned
  before each launch (fastrnn._C.set_poison), and each test checks that the CUDA kernels ran
  (fastrnn.cuda.autograd.LAUNCHES).
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import fastrnn
from fastrnn.backends import LayerProblem, get_backend, registered_backends
from fastrnn.cells import CELLS
from fastrnn.cuda import backend as cuda_backend
import kernel_helpers
from kernel_helpers import FP32_TOL, assert_matches, make_layer_inputs, rel_err, run_and_grad, run_layer_case
from fastrnn.cuda.capacity import H100_SMEM_PER_BLOCK, H100_SMS, capacity, plan, plan_for_blocks
from fastrnn.functional import rnn_layer
from fastrnn.reference import reference_layer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILT = importlib.util.find_spec("fastrnn._C") is not None
GPU = torch.cuda.is_available()
needs_ext = pytest.mark.skipif(not BUILT, reason="fastrnn._C is not built here (no nvcc or no CUDA build of torch)")
needs_gpu = pytest.mark.skipif(not (GPU and BUILT), reason="needs a CUDA GPU and the built extension fastrnn._C")


# ----------------------------------------------------------------------------- CPU-runnable


def test_registered_with_priority_and_not_auto():
    assert "cuda" in registered_backends()
    backend = get_backend("cuda")
    assert backend.priority == 20
    assert registered_backends().index("cuda") < registered_backends().index("triton")


def test_auto_skips_cuda_with_reason(auto_backend):
    # Not in fastrnn.measured's (empty) table of configurations measured faster than torch.
    model = fastrnn.LSTM(8, 16)
    choice = model.explain_backend(torch.randn(3, 2, 8))
    assert choice.backend == "torch"
    assert "measured faster than torch" in choice.skipped["cuda"]
    assert "'cuda'" in str(choice)


def test_cpu_tensors_raise_backend_error():
    model = fastrnn.GRU(8, 16, backend="cuda")
    with pytest.raises(fastrnn.BackendError, match="cuda"):
        model(torch.randn(3, 2, 8))


def _problem(**changes):
    base = dict(cell=CELLS["lstm"], device=torch.device("cuda"), dtype=torch.float32, input_size=8, hidden_size=16,
                proj_size=0, batch_size=2, seq_len=3, has_bias=True, has_lengths=False)
    base.update(changes)
    return LayerProblem(**base)


def test_unsupported_reasons():
    unsupported = cuda_backend.unsupported
    assert "CUDA tensors" in unsupported(_problem(device=torch.device("cpu")))
    assert "proj_size" in unsupported(_problem(proj_size=4))
    assert "float64" in unsupported(_problem(dtype=torch.float64))
    sms, smem = cuda_backend.device_limits(torch.device("cuda"))
    for name in CELLS:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            limit = capacity(CELLS[name].num_gates, torch.empty((), dtype=dtype).element_size(), sms, smem)
            assert unsupported(_problem(cell=CELLS[name], dtype=dtype, hidden_size=limit)) is None
            assert "capacity" in unsupported(_problem(cell=CELLS[name], dtype=dtype, hidden_size=limit + 1))


def test_launch_fit_reason_is_unsupported(monkeypatch):
    """A GPU that cannot hold every block at once (fastrnn._C.launch_fit says why): "auto" falls
    back, a named request raises with that reason. The extension and GPU are simulated here."""
    why = "the persistent lstm forward kernel needs 128 blocks resident at once ..."
    asked = []

    class FakeC:
        @staticmethod
        def launch_fit(cell, dtype, hidden, batch, device):
            asked.append((cell, dtype, hidden, batch, device))
            return why if hidden > 100 else ""

    monkeypatch.setattr(cuda_backend, "_extension_error", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda_backend, "device_limits", lambda device: (H100_SMS, H100_SMEM_PER_BLOCK))
    monkeypatch.setitem(sys.modules, "fastrnn._C", FakeC)
    monkeypatch.setattr(fastrnn, "_C", FakeC, raising=False)
    cuda_backend._launch_fit.cache_clear()
    try:
        assert cuda_backend.unsupported(_problem(hidden_size=200, batch_size=500)) == (
            f"the CUDA kernels cannot run here: {why}")
        assert cuda_backend.unsupported(_problem(hidden_size=50)) is None
        # batch enters only up to one batch tile (the plan does not change beyond it)
        assert asked == [(CELLS["lstm"].kernel_id, torch.float32, 200, 64, 0),
                         (CELLS["lstm"].kernel_id, torch.float32, 50, 2, 0)]

        def broken(*args):
            raise RuntimeError("CUDA driver version is insufficient")

        monkeypatch.setattr(FakeC, "launch_fit", staticmethod(broken))
        assert "launch check failed on GPU 0: CUDA driver" in cuda_backend.unsupported(_problem(hidden_size=60))
    finally:
        cuda_backend._launch_fit.cache_clear()


@needs_gpu
def test_launch_fit_on_this_gpu():
    from fastrnn import _C

    assert _C.launch_fit(CELLS["lstm"].kernel_id, torch.bfloat16, 768, 16, 0) == ""
    sms, smem = cuda_backend.device_limits(torch.device("cuda"))
    too_big = capacity(4, 2, sms, smem) + 1
    assert "too large" in _C.launch_fit(CELLS["lstm"].kernel_id, torch.bfloat16, too_big, 1, 0)


def test_unavailable_reason():
    why = cuda_backend.unavailable()
    if BUILT and GPU:
        assert why is None
    elif not BUILT:
        assert "no CUDA extension fastrnn._C" in why
    else:
        assert why == "no CUDA GPU is available"


def test_capacity_table_h100():
    """The numbers documented in fastrnn/cuda/capacity.py (132 SMs, 227 KB per block)."""
    assert [capacity(g, 4) for g in (1, 3, 4)] == [2640, 1456, 1292]
    assert [capacity(g, 2) for g in (1, 3, 4)] == [3728, 2112, 1848]
    # LSTM bf16 H=1024 backward, worked through in the docstring.
    assert plan(4, 2, 1024, 16, H100_SMS, H100_SMEM_PER_BLOCK, True) == (128, 8, 16, 205_184)
    # LSTM bf16 H=768 (the target shape), the whole batch of 16 in one pass. Forward: the
    # preferred 64 blocks of U=12 (M=48 rows, ld=776, 3 row tiles); backward: 48 blocks of U=16
    # (M=16, K=3072, ld=3080). With one block per SM (128 of U=6) it is one pass too.
    assert plan(4, 2, 768, 16, H100_SMS, H100_SMEM_PER_BLOCK, False) == (
        64, 12, 16, 48 * 776 * 2 + 16 * 776 * 2 + 8 * 3 * 16 * 16 * 4)
    assert plan(4, 2, 768, 16, H100_SMS, H100_SMEM_PER_BLOCK, True) == (
        48, 16, 16, 16 * 3080 * 2 + 16 * 3080 * 2 + 8 * 1 * 16 * 16 * 4)
    assert plan_for_blocks(4, 2, 768, 16, H100_SMS, H100_SMEM_PER_BLOCK, False) == (
        128, 6, 16, 24 * 776 * 2 + 16 * 776 * 2 + 8 * 2 * 16 * 16 * 4)
    # Fewer blocks only where they keep the number of passes: B=64 backward takes 4 passes of 16
    # on 48 blocks but 3 of 22 on 128, so it runs on 128; B=256 forward, 4 passes of 64 on 128.
    assert plan_for_blocks(4, 2, 768, 64, 48, H100_SMEM_PER_BLOCK, True)[:3] == (48, 16, 16)
    assert plan(4, 2, 768, 64, H100_SMS, H100_SMEM_PER_BLOCK, True)[:3] == (128, 6, 22)
    assert plan(4, 2, 768, 256, H100_SMS, H100_SMEM_PER_BLOCK, False)[:3] == (128, 6, 64)
    # B=256: 64 rows per pass at most.
    assert plan(4, 2, 768, 256, H100_SMS, H100_SMEM_PER_BLOCK, False).batch_tile == 64
    # Balanced passes: B=100 runs two passes of 50 rows, not 64 + 36; B=130, three of 44.
    assert plan(4, 2, 768, 100, H100_SMS, H100_SMEM_PER_BLOCK, False).batch_tile == 50
    assert plan(4, 2, 768, 130, H100_SMS, H100_SMEM_PER_BLOCK, False).batch_tile == 44
    for gates, itemsize in ((1, 4), (3, 4), (4, 4), (1, 2), (3, 2), (4, 2)):
        limit = capacity(gates, itemsize)
        assert all(plan(gates, itemsize, limit, 1, H100_SMS, H100_SMEM_PER_BLOCK, bwd).blocks for bwd in (0, 1))
        assert not all(plan(gates, itemsize, limit + 1, 1, H100_SMS, H100_SMEM_PER_BLOCK, bwd).blocks for bwd in (0, 1))


def test_import_fastrnn_does_not_import_extension():
    code = "import sys, fastrnn; assert 'fastrnn._C' not in sys.modules, 'import fastrnn imported fastrnn._C'"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


@needs_ext
def test_extension_exposes_functions():
    from fastrnn import _C

    for name in ("rnn_forward", "rnn_backward", "plan", "set_poison"):
        assert callable(getattr(_C, name)), name


@needs_ext
@pytest.mark.parametrize("gates,itemsize", [(1, 4), (1, 2), (3, 4), (3, 2), (4, 4), (4, 2)])
@pytest.mark.parametrize("backward", [False, True])
def test_capacity_agrees_with_launcher_plan(gates, itemsize, backward):
    """fastrnn/cuda/capacity.py restates kernels/layout.cuh's make_plan: same plans."""
    from fastrnn import _C

    for sms, smem in ((132, 232_448), (108, 166_912), (16, 101_376)):
        limit = capacity(gates, itemsize, sms, smem)
        for hidden in (1, 7, 24, 200, sms, sms + 1, 1000, limit - 1, limit, limit + 1):
            for batch in (1, 3, 17):
                assert tuple(plan(gates, itemsize, hidden, batch, sms, smem, backward)) == tuple(
                    _C.plan(gates, itemsize, hidden, batch, sms, smem, backward)), (hidden, batch, sms)
        assert _C.plan(gates, itemsize, limit, 1, sms, smem, backward)[0] > 0
        assert min(_C.plan(gates, itemsize, limit + 1, 1, sms, smem, bwd)[0] for bwd in (False, True)) == 0


@needs_ext
def test_extension_rejects_cpu_tensors_with_clear_message():
    from fastrnn import _C

    x = torch.zeros(2, 3, 4)
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        _C.rnn_forward(0, False, False, x, torch.zeros(4, 4), None, torch.zeros(3, 4), None,
                       torch.full((3,), 2, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="unknown cell id"):
        _C.rnn_forward(7, False, False, x, torch.zeros(4, 4), None, torch.zeros(3, 4), None,
                       torch.full((3,), 2, dtype=torch.int32))


@needs_ext
def test_extension_rejects_steps_or_batch_past_int32():
    """The kernels count steps and batch rows in 32 bits (csrc/launch.h check_int32_extents): the
    host refuses seq_len or batch >= 2^31 with a clear error, before any tensor is touched
    (zero-stride views: nothing that large is allocated)."""
    from fastrnn import _C

    big = 2 ** 31
    lengths = torch.full((3,), 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"below 2\^31 .*seq_len=2147483648, batch=3"):
        _C.rnn_forward(0, False, False, torch.zeros(1, 3, 4).expand(big, 3, 4), torch.zeros(4, 4), None,
                       torch.zeros(3, 4), None, lengths)
    with pytest.raises(RuntimeError, match=r"below 2\^31 .*seq_len=2, batch=2147483648"):
        _C.rnn_backward(0, False, False, torch.zeros(2, 1, 4).expand(2, big, 4), torch.zeros(1, 4).expand(big, 4),
                        None, torch.zeros(4, 4), torch.zeros(2, 1, 4).expand(2, big, 4), lengths)


# ----------------------------------------------------------------------------- GPU suite

DEVICE = torch.device("cuda")


@pytest.fixture
def poison():
    from fastrnn import _C

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    _C.set_poison(True)
    yield
    _C.set_poison(False)
    torch.backends.cuda.matmul.allow_tf32 = tf32


def launches():
    from fastrnn.cuda.autograd import LAUNCHES

    return dict(LAUNCHES)


LAYER_CASES = {
    **kernel_helpers.LAYER_CASES,  # the cases both kernel backends run; larger sizes on a GPU:
    "T6-B17-H200-reverse-lengths": (6, 17, 9, 200, True, "random", True, True),
    "T4-B3-H200-no-bias": (4, 3, 6, 200, True, [4, 1, 2], True, False),
    "T3-B17-H1000-lengths": (3, 17, 8, 1000, False, "random", True, True),  # several units per block
}


@needs_gpu
@pytest.mark.parametrize("case", list(LAYER_CASES))
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_layer_matches_reference(cell_name, case, poison):
    cell = CELLS[cell_name]
    T, B, I, H, reverse, lengths, state, bias = LAYER_CASES[case]
    before = launches()
    got, grads, expected, expected_grads = run_layer_case(
        "cuda", cell, T, B, I, H, reverse, lengths, state, bias, DEVICE)
    after = launches()
    assert after.get("forward", 0) > before.get("forward", 0)
    assert after.get("backward", 0) > before.get("backward", 0)
    assert got[0].dtype == torch.float32
    assert_matches(got, grads, expected, expected_grads, FP32_TOL, given_state=state)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("hidden", [40, 200])
def test_half_precision(cell_name, dtype, hidden, poison):
    """16-bit storage, fp32 math and state: error at most ~2x the reference's own error in the
    same dtype (both against float64), and never above 1e-2."""
    cell = CELLS[cell_name]
    inputs = make_layer_inputs(cell, 5, 3, 7, hidden, device=DEVICE)
    lengths = torch.tensor([5, 2, 4])
    lowp = [t.to(dtype) if t is not None else None for t in inputs]

    def ref(*args):
        return reference_layer(cell, *args, None, lengths, False)

    def cuda(*args):
        return rnn_layer(cell, *args, lengths=lengths, backend="cuda")

    expected, expected_grads = run_and_grad(ref, [t.double() if t is not None else None for t in lowp])
    ref_lowp, ref_lowp_grads = run_and_grad(ref, lowp)
    before = launches()
    got, grads = run_and_grad(cuda, lowp)
    assert launches().get("forward", 0) > before.get("forward", 0)
    assert got[0].dtype == dtype
    for g, r, e in zip(list(got) + grads, list(ref_lowp) + ref_lowp_grads, list(expected) + expected_grads):
        if e is None:
            continue
        err = rel_err(g, e)
        assert err < 1e-2
        assert err < 2 * rel_err(r, e) + 2e-3


@needs_gpu
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_float32_with_tf32_allowed(cell_name, poison):
    """torch's matmul TF32 flag on: the recurrent product runs on TF32 tensor cores
    (fused.uses_tf32). Error at most ~2x the reference's own under the same flag, and < 5e-3."""
    cell = CELLS[cell_name]
    inputs = make_layer_inputs(cell, 6, 5, 7, 200, device=DEVICE)
    lengths = torch.tensor([6, 2, 4, 0, 5])
    fp32 = [t.float() if t is not None else None for t in inputs]

    def ref(*args):
        return reference_layer(cell, *args, None, lengths, False)

    def cuda(*args):
        return rnn_layer(cell, *args, lengths=lengths, backend="cuda")

    expected, expected_grads = run_and_grad(ref, inputs)
    torch.backends.cuda.matmul.allow_tf32 = True  # the poison fixture restores the flag
    ref_tf32, ref_tf32_grads = run_and_grad(ref, fp32)
    got, grads = run_and_grad(cuda, fp32)
    for g, r, e in zip(list(got) + grads, list(ref_tf32) + ref_tf32_grads, list(expected) + expected_grads):
        if e is None:
            continue
        err = rel_err(g, e)
        assert err < 5e-3
        assert err < 2 * rel_err(r, e) + 1e-4


@needs_gpu
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_module_bidirectional_two_layers_packed(mode, poison):
    """Whole modules (2 layers, bidirectional, packed input) on backend="cuda" vs reference."""
    from torch.nn.utils.rnn import pack_padded_sequence

    cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN_TANH": fastrnn.RNN}[mode]
    torch.manual_seed(0)
    ref = cls(6, 40, num_layers=2, bidirectional=True, dtype=torch.float64).to(DEVICE)
    model = cls(6, 40, num_layers=2, bidirectional=True, backend="cuda").to(DEVICE)
    model.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(7, 3, 6, dtype=torch.float64, device=DEVICE)
    lengths = torch.tensor([7, 4, 1])
    out_ref, _ = ref(pack_padded_sequence(x, lengths))
    out, _ = model(pack_padded_sequence(x.float(), lengths))
    assert rel_err(out.data, out_ref.data) < FP32_TOL
    out.data.sum().backward()
    out_ref.data.sum().backward()
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert rel_err(p.grad, q.grad) < FP32_TOL, name


@needs_gpu
def test_too_large_hidden_raises_backend_error():
    sms, smem = cuda_backend.device_limits(DEVICE)
    hidden = capacity(4, 4, sms, smem) + 1
    model = fastrnn.LSTM(4, hidden, backend="cuda").to(DEVICE)
    with pytest.raises(fastrnn.BackendError, match="capacity"):
        model(torch.randn(2, 1, 4, device=DEVICE))


@needs_gpu
def test_double_backward_matches_reference():
    """A second derivative through the CUDA layer (create_graph) is the reference's; the host
    side of this is also tested without a GPU in test_edge_cases_cuda_host.py."""
    cell = CELLS["gru"]
    inputs = make_layer_inputs(cell, 3, 2, 5, 24, device=DEVICE)

    def penalty_grad(backend, dtype):
        x, h0, _, w_ih, w_hh, b_ih, b_hh = [t.to(dtype) if t is not None else None for t in inputs]
        x.requires_grad_()
        w_hh.requires_grad_()
        out, _, _ = rnn_layer(cell, x, h0, None, w_ih, w_hh, b_ih, b_hh, backend=backend)
        (g,) = torch.autograd.grad((out * out.detach().cos()).sum(), x, create_graph=True)
        return torch.autograd.grad((g.norm() - 1) ** 2, w_hh)[0]

    assert rel_err(penalty_grad("cuda", torch.float32), penalty_grad("reference", torch.float64)) < FP32_TOL
