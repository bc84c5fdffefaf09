"""The fused CPU backend ("cpu", csrc/cpu/) against the float64 reference (design.md §6).

Every comparison runs the kernels in float32 on inputs that are the float32 rounding of the
reference's float64 inputs, and requires ``|out - ref|max / |ref|max < 1e-4`` for outputs, final
states and the gradients of x, h0, c0 and every parameter. Kernel outputs are NaN-poisoned
(autograd.POISON), each test checks that the kernels really ran (autograd.LAUNCHES), and the
layer tests run on every instruction-set build this CPU supports (FASTRNN_CPU_ISA).
"""

import random
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import measured
from fastrnn.backends import BackendError, LayerProblem, explain, forget_decisions, get_backend
from fastrnn.cells import CELLS
from fastrnn.cpu import backend as cpu_backend
from fastrnn.cpu import isa as cpu_isa
from fastrnn.functional import rnn_layer
from fastrnn.reference import reference_layer
from kernel_helpers import FP32_TOL, LaunchCounter, assert_matches, make_layer_inputs, rel_err, run_and_grad, run_layer_case

# Built and importable (a build for another torch version fails to import: skipped with the reason).
BUILT = cpu_backend._extension_error() is None
pytestmark = pytest.mark.skipif(not BUILT, reason=f"fastrnn._cpu is not usable here: {cpu_backend._extension_error()}")

if BUILT:
    from fastrnn import _cpu
    from fastrnn.cpu import autograd as cpu_autograd
    from fastrnn.cpu import weights as cpu_weights

    SUPPORTED = cpu_isa.supported()
else:
    SUPPORTED = ()

CELL_NAMES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def isa_param(name):
    return pytest.param(name, marks=pytest.mark.skipif(
        name not in SUPPORTED, reason=f"this CPU does not run the {name} instruction set"))


ISAS = [isa_param(name) for name in cpu_isa.ISAS]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    if BUILT:
        monkeypatch.setattr(cpu_autograd, "POISON", True)
    monkeypatch.delenv(cpu_isa.ENV_VAR, raising=False)
    forget_decisions()
    yield
    forget_decisions()


def Launches():
    """Counts this backend's kernel launches between enter and count()."""
    return LaunchCounter(cpu_autograd.LAUNCHES)


LAYER_CASES = {
    # name: (T, B, I, H, reverse, lengths, given state, bias)
    "T5-B3-H24": (5, 3, 7, 24, False, None, True, True),
    "T5-B17-H40-reverse-zero-state": (5, 17, 10, 40, True, None, False, True),
    "T1-B1-H24": (1, 1, 5, 24, False, None, True, True),
    "T6-B3-H40-lengths": (6, 3, 7, 40, False, [6, 3, 0], True, True),
    "T6-B9-H24-reverse-lengths": (6, 9, 9, 24, True, "random", True, True),
    "T4-B3-H24-no-bias": (4, 3, 6, 24, True, [4, 1, 2], True, False),
    "T3-B5-H200": (3, 5, 11, 200, False, "random", True, True),  # 200: partial last vector
}


def check_layer(cell, T, B, I, H, reverse, lengths, state, bias):
    with Launches() as launches:
        got, grads, expected, expected_grads = run_layer_case(
            "cpu", cell, T, B, I, H, reverse, lengths, state, bias, "cpu")
    assert launches.count("forward") == 1 and launches.count("backward") == 1
    assert got[0].dtype == torch.float32
    assert_matches(got, grads, expected, expected_grads, FP32_TOL, given_state=state)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", list(LAYER_CASES))
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_layer_matches_reference(cell_name, case, isa, monkeypatch):
    monkeypatch.setenv(cpu_isa.ENV_VAR, isa)
    check_layer(CELLS[cell_name], *LAYER_CASES[case])


@pytest.mark.parametrize("isa", ISAS)
def test_fuzz(isa, monkeypatch):
    """Random cells, sizes (odd ones included), lengths, directions, states and biases."""
    monkeypatch.setenv(cpu_isa.ENV_VAR, isa)
    rng = random.Random(20 + cpu_isa.ISAS.index(isa))
    for _ in range(12):
        cell = CELLS[rng.choice(CELL_NAMES)]
        T, B = rng.choice([1, 2, 7, 13]), rng.choice([1, 2, 3, 4, 5, 8, 11])
        I, H = rng.choice([1, 3, 16, 33]), rng.choice([1, 5, 16, 17, 47, 64, 129])
        lengths = rng.choice([None, "random"]) if B >= 2 else None
        check_layer(cell, T, B, I, H, rng.random() < 0.5, lengths, rng.random() < 0.7, rng.random() < 0.8)


def test_instruction_sets_detected():
    assert "portable" in SUPPORTED
    assert set(SUPPORTED) <= set(cpu_isa.ISAS)
    assert cpu_isa.current() == SUPPORTED[-1]  # the best one, unless forced
    for name in SUPPORTED:
        assert _cpu.vector_width(cpu_isa.isa_id(name)) == {"portable": 4, "avx2": 8, "avx512": 16}[name]


def test_forced_instruction_set_runs(monkeypatch):
    """FASTRNN_CPU_ISA really selects the build: the portable build rounds differently (no FMA)."""
    if "avx2" not in SUPPORTED:
        pytest.skip("needs a CPU with AVX2")
    cell = CELLS["gru"]
    inputs = [t.float() if t is not None else None for t in make_layer_inputs(cell, 9, 3, 20, 40, "cpu")]
    results = {}
    for name in ("portable", "avx2"):
        monkeypatch.setenv(cpu_isa.ENV_VAR, name)
        results[name] = rnn_layer(cell, *inputs[:5], *inputs[5:], backend="cpu")[0]
    assert not torch.equal(results["portable"], results["avx2"])
    assert rel_err(results["portable"], results["avx2"].double()) < FP32_TOL


def test_forced_unknown_or_unsupported_instruction_set_raises(monkeypatch, auto_backend):
    cell = CELLS["rnn_tanh"]
    x, h0 = torch.randn(2, 1, 3), torch.zeros(1, 4)
    w_ih, w_hh = torch.randn(4, 3), torch.randn(4, 4)
    monkeypatch.setenv(cpu_isa.ENV_VAR, "sse9")
    forget_decisions()
    with pytest.raises(BackendError, match="FASTRNN_CPU_ISA must be one of portable, avx2, avx512, got 'sse9'"):
        rnn_layer(cell, x, h0, None, w_ih, w_hh, backend="cpu")
    missing = [name for name in cpu_isa.ISAS if name not in SUPPORTED]
    if missing:
        monkeypatch.setenv(cpu_isa.ENV_VAR, missing[-1])
        forget_decisions()
        with pytest.raises(BackendError, match="this CPU supports only"):
            rnn_layer(cell, x, h0, None, w_ih, w_hh, backend="cpu")
    # auto falls back (to torch's kernels) with the reason
    choice = explain(_problem(cell), "auto")
    assert choice.backend == "torch" and "FASTRNN_CPU_ISA" in choice.skipped["cpu"]


# B=11, H=100: rows split over threads; B=3, H=600: a team splits the units (W_hh > 1 MiB)
@pytest.mark.parametrize("B,H", [(11, 100), (3, 600)])
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_thread_count_changes_no_bit(cell_name, B, H):
    """Every thread count gives the same bits (kernel outputs), and they match the reference."""
    cell = CELLS[cell_name]
    T = 6
    inputs = [t.float() for t in make_layer_inputs(cell, T, B, 13, H, "cpu") if t is not None]
    x, h0 = inputs[0], inputs[1]
    c0 = inputs[2] if cell.has_cell_state else None
    w_ih, w_hh, b_ih, b_hh = inputs[-4:]
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    isa = cpu_isa.isa_id(cpu_isa.current())
    width = _cpu.vector_width(isa)
    from fastrnn.fused import input_projection

    gx, b_hn = input_projection(cell.name == "gru", x, w_ih, b_ih, b_hh)
    dout, dh = torch.randn(T, B, H), torch.randn(B, H)
    dc = torch.randn(B, H) if cell.has_cell_state else None
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            fwd = _cpu.forward(isa, cell.kernel_id, True, gx, cpu_weights.pack(w_hh, cell.num_gates, width, "forward"),
                               b_hn, h0, c0, lengths, True, True)
            bwd = _cpu.backward(isa, cell.kernel_id, True, dout, dh, dc,
                                cpu_weights.pack(w_hh, cell.num_gates, width, "backward"), fwd[3], fwd[0], h0, c0,
                                lengths, True)
            results.append(fwd + bwd)
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):  # saved activations of inactive steps stay NaN (poison)
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    with torch.no_grad():
        expected = reference_layer(cell, *(t.double() if t is not None else None for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)),
                                   None, lengths, True)
    assert rel_err(results[-1][0], expected[0]) < FP32_TOL and rel_err(results[-1][1], expected[1]) < FP32_TOL


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_module_packed_bidirectional_two_layers(mode):
    """fastrnn modules with PackedSequence on backend="cpu" vs backend="reference" in float64."""
    I, H = 6, 24
    cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN_TANH": fastrnn.RNN, "RNN_RELU": fastrnn.RNN}[mode]
    kw = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    torch.manual_seed(0)
    model = cls(I, H, num_layers=2, bidirectional=True, backend="cpu", **kw)
    ref_model = cls(I, H, num_layers=2, bidirectional=True, backend="reference", **kw).double()
    ref_model.load_state_dict(model.state_dict())
    lengths = torch.tensor([5, 2, 4, 1])
    x64 = torch.randn(5, 4, I, dtype=torch.float64)
    h0, c0 = torch.randn(4, 4, H, dtype=torch.float64), torch.randn(4, 4, H, dtype=torch.float64)

    def run(m, dtype):
        x = x64.to(dtype, copy=True).requires_grad_()
        hx = (h0.to(dtype, copy=True).requires_grad_(), c0.to(dtype, copy=True).requires_grad_())
        out, state = m(pack_padded_sequence(x, lengths, enforce_sorted=False), hx if mode == "LSTM" else hx[0])
        states = state if mode == "LSTM" else (state,)
        g = torch.Generator().manual_seed(5)
        loss = (out.data.double() * torch.randn(out.data.shape, generator=g, dtype=torch.float64)).sum()
        for s in states:
            loss = loss + (s.double() * torch.randn(s.shape, generator=g, dtype=torch.float64)).sum()
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
    for g, e in zip(grads, expected_grads):
        assert rel_err(g, e) < FP32_TOL


def test_non_contiguous_inputs_batch_first_and_eval_backward():
    """batch_first input (a transposed view inside), a non-contiguous h0, eval mode, backward."""
    torch.manual_seed(1)
    model = fastrnn.GRU(7, 33, batch_first=True, backend="cpu").eval()
    ref = fastrnn.GRU(7, 33, batch_first=True, backend="reference").double().eval()
    ref.load_state_dict(model.state_dict())
    x64 = torch.randn(3, 20, 7, dtype=torch.float64)[:, ::2]  # (B=3, T=10, 7), strided
    h64 = torch.randn(1, 33, 3, dtype=torch.float64).transpose(1, 2)  # non-contiguous (1, 3, 33)
    outs = []
    for m, dtype in ((model, torch.float32), (ref, torch.float64)):
        x, h = x64.to(dtype).requires_grad_(), h64.to(dtype).requires_grad_()
        out, h_n = m(x, h)
        (out.double().sum() + h_n.double().pow(2).sum()).backward()
        outs.append((out, h_n, x.grad, h.grad, m.weight_hh_l0.grad))
    with Launches() as launches:
        model(x64.float(), h64.float())
    assert launches.count("forward") == 1
    for g, e in zip(*outs):
        assert rel_err(g, e) < FP32_TOL


@pytest.mark.parametrize("T,B", [(0, 3), (4, 0)])
def test_empty_problems_match_reference(T, B):
    """Nothing for the kernels to do: outputs, states and gradients as the reference gives them."""
    cell = CELLS["lstm"]
    inputs = [torch.randn(T, B, 5), torch.randn(B, 8), torch.randn(B, 8), torch.randn(32, 5), torch.randn(32, 8)]
    results = {}
    for backend in ("cpu", "reference"):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out, h, c = rnn_layer(cell, *leaves, backend=backend)
        (out.sum() + h.sum() + c.sum()).backward()
        results[backend] = [out, h, c] + [t.grad for t in leaves]
    assert results["cpu"][0].shape == (T, B, 8)
    for got, expected in zip(results["cpu"], results["reference"]):
        assert (got is None) == (expected is None)
        if got is not None:
            assert torch.equal(got, expected)


def test_weight_cache_follows_in_place_changes():
    """Packed weights are reused only while the weight is unchanged (version counter)."""
    torch.manual_seed(2)
    model = fastrnn.RNN(4, 16, backend="cpu")
    ref = fastrnn.RNN(4, 16, backend="reference").double()
    x = torch.randn(5, 2, 4)
    for _ in range(2):
        ref.load_state_dict(model.state_dict())
        with torch.no_grad():
            got, expected = model(x)[0], ref(x.double())[0]
        assert rel_err(got, expected) < FP32_TOL
        with torch.no_grad():
            model.weight_hh_l0.mul_(-1.5)  # in place: the cached packing must not be served


def test_weight_cache_serves_detached_aliases_and_follows_their_changes(monkeypatch):
    """A compiled training step runs layers on detached aliases of the weights (fastrnn/ops.py): the
    cache serves them the weight's packing, and an in-place change through an alias, or the
    weight moved to other memory (``.data =``), is never served the old one."""
    from fastrnn.cpu import weights as cpu_weights

    packs = []
    pack = cpu_weights.pack
    monkeypatch.setattr(cpu_weights, "pack", lambda *args: packs.append(1) or pack(*args))
    cpu_weights.clear_cache()
    w = torch.randn(12, 4, requires_grad=True)
    first = cpu_weights.packed(w, 3, 4, "forward")
    assert cpu_weights.packed(w.detach(), 3, 4, "forward") is first and len(packs) == 1
    alias = w.detach()
    alias.mul_(2)  # shares w's version counter
    again = cpu_weights.packed(w.detach(), 3, 4, "forward")
    assert len(packs) == 2 and torch.equal(again, pack(w, 3, 4, "forward"))
    old = w.detach().clone()
    w.data = torch.randn(12, 4)  # new memory, old storage freed
    moved = cpu_weights.packed(w.detach(), 3, 4, "forward")
    assert torch.equal(moved, pack(w, 3, 4, "forward")) and not torch.equal(moved, pack(old, 3, 4, "forward"))
    cpu_weights.clear_cache()


def test_double_backward_matches_reference():
    cell = CELLS["gru"]
    inputs = make_layer_inputs(cell, 4, 3, 5, 8, "cpu")
    lengths = torch.tensor([4, 2, 3])

    def grad_norm(backend, dtype):
        leaves = [t.to(dtype).requires_grad_() if t is not None else None for t in inputs]
        x, h0, _, w_ih, w_hh, b_ih, b_hh = leaves
        out, h, _ = rnn_layer(cell, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths=lengths, backend=backend)
        (g,) = torch.autograd.grad(out.pow(2).sum() + h.sum(), w_hh, create_graph=True)
        g.pow(2).sum().backward()
        return x.grad

    assert rel_err(grad_norm("cpu", torch.float32), grad_norm("reference", torch.float64)) < FP32_TOL


def _problem(cell, dtype=torch.float32, device="cpu", proj_size=0, batch=1, hidden=256):
    return LayerProblem(cell, torch.device(device), dtype, hidden, hidden, proj_size, batch, 128, True, False)


def test_unsupported_reasons():
    lstm = CELLS["lstm"]
    assert cpu_backend.unsupported(_problem(lstm)) is None
    assert "float32 only" in cpu_backend.unsupported(_problem(lstm, dtype=torch.float64))
    assert "proj_size" in cpu_backend.unsupported(_problem(lstm, proj_size=3))
    assert "CPU tensors" in cpu_backend.unsupported(_problem(lstm, device="meta"))


def test_float64_named_raises_backend_error():
    model = fastrnn.LSTM(3, 4, backend="cpu").double()
    with pytest.raises(BackendError, match="float32 only"):
        model(torch.randn(2, 1, 3, dtype=torch.float64))


def test_auto_follows_measured_table(monkeypatch, auto_backend):
    """auto picks "cpu" exactly where fastrnn.measured.CPU_FASTER_THAN_TORCH admits it."""
    gru = CELLS["gru"]
    isa = cpu_isa.current()
    monkeypatch.setattr(measured, "CPU_FASTER_THAN_TORCH",
                        {isa: (measured.CpuRegion("gru", (1, 4), (128, 512), 64, "test"),)})
    forget_decisions()
    assert explain(_problem(gru, batch=1, hidden=256)).backend == "cpu"
    assert explain(_problem(gru, batch=1, hidden=256)._replace(seq_len=63)).backend == "torch"
    other = explain(_problem(gru, batch=16, hidden=256))
    assert other.backend == "torch" and "CPU_FASTER_THAN_TORCH" in other.skipped["cpu"]
    assert explain(_problem(CELLS["lstm"], batch=1, hidden=256)).backend == "torch"
    assert explain(_problem(gru, batch=1, hidden=256, dtype=torch.float64)).backend == "torch"


def test_cells_and_short_sequences_stay_on_torch_under_auto(auto_backend):
    """The measured table covers T >= 128: a cell's single step is not admitted."""
    cell = fastrnn.GRUCell(256, 256)
    ref = torch.nn.GRUCell(256, 256)
    ref.load_state_dict(cell.state_dict())
    x, h = torch.randn(1, 256), torch.randn(1, 256)
    with Launches() as launches:
        assert torch.equal(cell(x, h), ref(x, h))  # torch's own cell kernel: the same bits
    assert launches.count("forward") == 0


def test_unavailable_reason_names_the_build(monkeypatch, auto_backend):
    monkeypatch.setattr(cpu_backend, "_extension_error", lambda: "this fastrnn install has no CPU extension (test)")
    forget_decisions()
    with pytest.raises(BackendError, match="no CPU extension"):
        rnn_layer(CELLS["gru"], torch.randn(2, 1, 3), None, None, torch.randn(12, 3), torch.randn(12, 4),
                  backend="cpu")
    model = fastrnn.GRU(3, 4)
    assert "no CPU extension" in model.explain_backend(torch.randn(2, 1, 3)).skipped["cpu"]


def test_extension_rejects_bad_arguments_with_clear_messages():
    isa = cpu_isa.isa_id("portable")
    T, B, H = 3, 2, 5
    gx, h0 = torch.randn(T, B, H), torch.randn(B, H)
    good = cpu_weights.pack(torch.randn(H, H), 1, 4, "forward")
    lengths = torch.full((B,), T, dtype=torch.int32)

    def forward(**kw):
        args = dict(isa_id=isa, cell=0, reverse=False, gx=gx, packed=good, b_hn=None, h0=h0, c0=None,
                    lengths=lengths, save=False, poison=False)
        args.update(kw)
        return _cpu.forward(*args.values())

    forward()
    with pytest.raises(RuntimeError, match=r"lengths must be in \[0, 3\], got 4"):
        forward(lengths=torch.tensor([3, 4], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="lengths must be Int"):
        forward(lengths=torch.tensor([3, 3]))
    with pytest.raises(RuntimeError, match="packed W_hh\\^T must have shape"):
        forward(packed=good[:, :4])
    with pytest.raises(RuntimeError, match="gx must be Float, got Double"):
        forward(gx=gx.double())
    with pytest.raises(RuntimeError, match="h0 must be contiguous"):
        forward(h0=torch.randn(H, B).t())
    with pytest.raises(RuntimeError, match="c0 must be given for the LSTM and only for it"):
        forward(c0=h0)
    with pytest.raises(RuntimeError, match="cell id must be"):
        forward(cell=7)
    with pytest.raises(RuntimeError, match="instruction set id must be"):
        forward(isa_id=9)


def test_import_fastrnn_does_not_import_extension():
    code = "import sys, fastrnn; assert 'fastrnn._cpu' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_extension_built_for_another_torch_is_not_loaded(monkeypatch):
    """A build for another torch version is reported (loading it could crash the process)."""
    import types

    monkeypatch.setitem(sys.modules, "fastrnn._build_info", types.SimpleNamespace(
        CPU_EXTENSION_SKIPPED=None, CPU_EXTENSION_TORCH="1.0.0"))
    why = cpu_backend._extension_error.__wrapped__()
    assert "compiled against torch 1.0.0" in why and torch.__version__ in why and "rebuild" in why
