"""Backend "torch" (torch's own kernels) and the auto rule around it (fastrnn/torch_backend.py).

On the CPU, ``auto`` runs a module's whole stack as ONE call of torch's kernel, with outputs,
gradients and dropout masks identical to torch.nn's. Where torch would fail on a GPU (cuDNN),
``auto`` falls through to the reference; those cases are simulated here by declaring the CPU a
cuDNN device (``CUDNN_DEVICE_TYPES``): every decision is a function of the problem and that set.
"""

import threading

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import backends, torch_backend
from fastrnn.backends import BackendError, LayerProblem
from fastrnn.cells import CELLS

from helpers import flat, make_cell_pair, make_pair, random_hx

D = torch.float64


@pytest.fixture(autouse=True)
def _auto(auto_backend):
    """Every test here is about what ``auto`` does: no FASTRNN_BACKEND."""


@pytest.fixture
def calls(monkeypatch):
    """Records the torch kernels the backend calls: [(mode or cell mode, number of args)]."""
    seen = []

    def recording(table):
        return {mode: (lambda fn, mode: lambda *a: seen.append((mode, a)) or fn(*a))(fn, mode)
                for mode, fn in table.items()}

    monkeypatch.setattr(torch_backend, "_STACK", recording(torch_backend._STACK))
    monkeypatch.setattr(torch_backend, "_CELL", recording(torch_backend._CELL))
    return seen


@pytest.fixture
def cudnn_cpu(monkeypatch):
    """Treat the CPU as a cuDNN device, as a GPU would be."""
    monkeypatch.setattr(torch_backend, "CUDNN_DEVICE_TYPES", {"cpu", "cuda"})
    backends.forget_decisions()
    yield
    backends.forget_decisions()


def _grads(module, *leaves):
    return [t.grad for t in leaves] + [p.grad for p in module.parameters()]


def _forward_backward(module, x, hx):
    out, state = module(x, hx)
    loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view_as(t)).sum() for t in flat((out, state)))
    loss.backward()
    return flat((out, state))


CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, dropout=0.5),
    dict(batch_first=True, bias=False),
]


@pytest.mark.parametrize("kind", ["LSTM", "LSTM_PROJ", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "plain")
@pytest.mark.parametrize("form", ["padded", "packed", "unbatched"])
def test_module_equals_torch_nn_in_one_call(kind, config, form, calls):
    torch.manual_seed(0)
    ref, fast = make_pair(kind, **config)
    assert fast.explain_backend(torch.randn(4, 3, 5, dtype=D)).backend == "torch"
    batch = 3
    x = torch.randn(6, batch, 5, dtype=D)
    if config.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    if form == "packed":
        lengths = torch.tensor([4, 6, 1])
        x = pack_padded_sequence(x, lengths, batch_first=bool(config.get("batch_first")), enforce_sorted=False)
        hx = random_hx(ref, batch)
    elif form == "unbatched":
        x = x[0] if config.get("batch_first") else x[:, 0]
        hx = random_hx(ref, batch, batched=False)
    else:
        hx = random_hx(ref, batch)
    leaves = [t.requires_grad_() for t in flat(hx)]
    results = []
    for module in (ref, fast):
        for t in leaves:
            t.grad = None
        torch.manual_seed(1)  # same dropout masks
        outs = _forward_backward(module, x, hx)
        results.append(outs + _grads(module, *leaves))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert [mode for mode, _ in calls] == [fast.mode]  # the whole stack in one call


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell_tanh", "RNNCell_relu"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("given", [True, False])
def test_cell_equals_torch_nn(kind, batched, given, calls):
    torch.manual_seed(0)
    ref, fast = make_cell_pair(kind)
    x = torch.randn(3, 5, dtype=D) if batched else torch.randn(5, dtype=D)
    shape = (3, 24) if batched else (24,)
    hx = None
    if given:
        hx = (torch.randn(shape, dtype=D), torch.randn(shape, dtype=D)) if kind == "LSTMCell" else torch.randn(shape, dtype=D)
    out_ref, out_fast = ref(x, hx), fast(x, hx)
    for got, want in zip(flat(out_fast), flat(out_ref)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert len(calls) == 1 and calls[0][0] == fast.cell.mode


def test_double_backward_on_the_cpu():
    torch.manual_seed(0)
    gru = fastrnn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=D)
    x = torch.randn(5, 2, 3, dtype=D, requires_grad=True)
    assert gru.explain_backend(x).backend == "torch"
    assert torch.autograd.gradgradcheck(lambda x: gru(x)[0], (x,))


def test_autocast_runs_the_whole_layer_in_the_autocast_dtype():
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(5, 8, num_layers=2)
    x = torch.randn(4, 3, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = lstm(x)
        with fastrnn.use_backend("reference"):
            out_ref, _ = lstm(x)
    assert out.dtype == h.dtype == c.dtype == torch.bfloat16
    torch.testing.assert_close(out, out_ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert lstm.weight_hh_l0.grad.dtype == torch.float32


# ------------------------------------------------------------------------------ one layer-direction


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 1, 0, 3]], ids=["full", "lengths"])
def test_layer_matches_the_reference(cell, reverse, lengths):
    torch.manual_seed(0)
    c = CELLS[cell]
    H, I, B, T = 6, 4, 4, 5
    x = torch.randn(T, B, I, dtype=D, requires_grad=True)
    h0 = torch.randn(B, H, dtype=D, requires_grad=True)
    c0 = torch.randn(B, H, dtype=D, requires_grad=True) if c.has_cell_state else None
    weights = [torch.randn(c.num_gates * H, I, dtype=D), torch.randn(c.num_gates * H, H, dtype=D),
               torch.randn(c.num_gates * H, dtype=D), torch.randn(c.num_gates * H, dtype=D)]
    weights = [(0.5 * w).requires_grad_() for w in weights]
    lens = None if lengths is None else torch.tensor(lengths)
    results = []
    for backend in ("torch", "reference"):
        out = fastrnn.functional.rnn_layer(c, x, h0, c0, *weights, lengths=lens, reverse=reverse, backend=backend)
        outs = [t for t in out if t is not None]
        leaves = [t for t in (x, h0, c0, *weights) if t is not None]
        grads = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(outs)), leaves)
        results.append(outs + list(grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ auto's fallbacks


def _problem(device="cpu", seq_len=10, batch=2):
    return LayerProblem(CELLS["lstm"], torch.device(device), torch.float32, 4, 8, 0, batch, seq_len, True, False)


def test_support_check_is_a_function_of_the_problem():
    unsupported = torch_backend.unsupported
    assert unsupported(_problem("cuda", seq_len=65535)) is None
    assert "65,535" in unsupported(_problem("cuda", seq_len=65536))
    assert "batch 0" in unsupported(_problem("cuda", batch=0))
    assert unsupported(_problem("cpu", seq_len=70000)) is None  # torch's CPU kernels have no limit
    assert unsupported(_problem("cpu", batch=0)) is None
    assert "double backward" in torch_backend.note(_problem("cuda"))
    assert torch_backend.note(_problem("cpu")) is None


def test_auto_falls_back_to_the_reference_past_cudnn_step_limit(cudnn_cpu, calls):
    lstm = fastrnn.LSTM(1, 2)
    x = torch.randn(65536, 1, 1)
    choice = lstm.explain_backend(x)
    assert choice.backend == "reference"
    assert "65,535" in choice.skipped["torch"]
    out, _ = lstm(x[:65535])  # at the limit torch runs
    assert calls and calls[-1][0] == "LSTM"


def test_named_torch_backend_raises_where_cudnn_fails(cudnn_cpu, calls):
    gru = fastrnn.GRU(1, 2, backend="torch")
    with pytest.raises(BackendError, match="'torch'.*65,535"):
        gru(torch.randn(65536, 1, 1))
    assert calls == []


def test_auto_notes_what_it_cannot_decide_at_forward_time(cudnn_cpu):
    choice = fastrnn.LSTM(3, 4).explain_backend(torch.randn(5, 2, 3))
    assert choice.backend == "torch"
    assert "double backward" in str(choice) and "backend='reference'" in str(choice)


def test_eval_mode_backward_runs_cudnn_in_training_mode(cudnn_cpu, calls):
    torch.manual_seed(0)
    ref, fast = make_pair("LSTM", num_layers=2, dropout=0.5)
    ref.eval(), fast.eval()
    x = torch.randn(6, 3, 5, dtype=D, requires_grad=True)
    out = fast(x)[0]
    mode, args = calls[-1]
    assert args[-3] is True and args[-4] == 0.0  # train=True, dropout 0: cuDNN can run backward
    torch.testing.assert_close(out, ref(x)[0], rtol=0, atol=0)  # same outputs as eval
    (g,) = torch.autograd.grad(out.sum(), x)
    with fastrnn.use_backend("reference"):
        (g_ref,) = torch.autograd.grad(fast(x)[0].sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # no autograd: eval as torch.nn runs it
        fast(x)
    assert calls[-1][1][-3] is False


@pytest.mark.parametrize("kind", ["module", "cell", "layer"])
def test_double_backward_through_cudnn_raises_with_the_way_out(cudnn_cpu, kind):
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3, requires_grad=True)
    if kind == "module":
        model = fastrnn.LSTM(3, 4)
        run = lambda: model(x)[0]  # noqa: E731
    elif kind == "cell":
        model = fastrnn.GRUCell(3, 4)
        run = lambda: model(x[0])  # noqa: E731
    else:
        model = fastrnn.RNN(3, 4)
        run = lambda: fastrnn.functional.rnn_tanh_layer(  # noqa: E731
            x, torch.zeros(2, 4), model.weight_ih_l0, model.weight_hh_l0, backend="torch")[0]
    out = run()
    # First-order gradients are untouched by the guard.
    (g,) = torch.autograd.grad(out.pow(2).sum(), x)
    with fastrnn.use_backend("reference"):
        (g_ref,) = torch.autograd.grad(run().pow(2).sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    # A gradient of the gradient names the way out.
    (g,) = torch.autograd.grad(run().pow(2).sum(), x, create_graph=True)
    with pytest.raises(BackendError, match="double backward.*backend='reference'"):
        g.pow(2).sum().backward()


def test_batch_zero_falls_back_on_cudnn(cudnn_cpu):
    lstm = fastrnn.LSTM(3, 4)
    x = torch.randn(5, 0, 3, requires_grad=True)
    assert lstm.explain_backend(x).backend == "reference"
    out, _ = lstm(x)
    out.sum().backward()
    assert out.shape == (5, 0, 4) and x.grad.shape == x.shape


# ------------------------------------------------------------------------------ use_backend and threads


def test_use_backend_is_seen_by_threads_started_inside_the_block():
    lstm = fastrnn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    seen = []
    with fastrnn.use_backend("reference"):
        thread = threading.Thread(target=lambda: seen.append(lstm.explain_backend(x).backend))
        thread.start()
        thread.join()
    assert seen == ["reference"]
    assert lstm.explain_backend(x).backend == "torch"


def test_explain_decisions_follow_the_request():
    # Remembered decisions must not outlive a change of use_backend or the environment.
    lstm = fastrnn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    assert lstm.explain_backend(x).backend == "torch"
    with fastrnn.use_backend("reference"):
        assert lstm.explain_backend(x).backend == "reference"
    assert lstm.explain_backend(x).backend == "torch"


def test_parametrized_weights_are_used(calls):
    torch.manual_seed(0)
    ref, fast = make_pair("GRU")
    for m in (ref, fast):
        nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 5, dtype=D)
    torch.testing.assert_close(fast(x)[0], ref(x)[0], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's weight buffer exists on a CUDA GPU only")
def test_weights_flattened_for_cudnn_on_gpu():
    import warnings

    torch.manual_seed(0)
    ref = nn.LSTM(8, 16, num_layers=2, bidirectional=True).cuda()
    fast = fastrnn.LSTM(8, 16, num_layers=2, bidirectional=True).cuda()
    fast.load_state_dict(ref.state_dict())
    fast.flatten_parameters()  # load_state_dict copies into the flat buffer; torch.nn alike
    x = torch.randn(5, 3, 8, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cuDNN warns when it has to compact the weights per call
        out = fast(x)[0]
    torch.testing.assert_close(out, ref(x)[0], rtol=0, atol=0)


def test_compiled_module_under_auto_runs_torch_kernels_inside_the_operator(calls):
    # A tracer sees fastrnn's operator per layer (fastrnn/ops.py), never torch's kernels (Dynamo
    # refuses torch.nn's RNNs, inductor fails on aten.mkldnn_rnn_layer); when the compiled graph
    # runs, the operator picks torch's kernels as eager auto does.
    torch.manual_seed(0)
    gru = fastrnn.GRU(3, 4, num_layers=2)
    x = torch.randn(3, 2, 3)
    compiled = torch.compile(gru, fullgraph=True, backend="inductor")
    out = compiled(x)[0]
    assert [mode for mode, _ in calls] == ["GRU", "GRU"]  # one per layer, inside the operator
    torch.testing.assert_close(out, gru(x)[0], rtol=1e-6, atol=1e-6)
    traced = torch.jit.trace(gru, (x,), check_trace=False)
    torch.testing.assert_close(traced(torch.randn(5, 2, 3))[0].shape, torch.Size([5, 2, 4]))
