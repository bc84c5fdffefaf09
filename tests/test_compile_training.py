"""Compiled training runs each layer-direction's forward once (issue 21, item 4).

Under ``torch.compile`` with autograd recording, a layer-direction is the operator
``fastrnn::rnn_layer_recorded`` (fastrnn/ops.py): the chosen backend runs with autograd on, as in
eager mode, and its graph is kept under a handle until ``rnn_layer_recorded_backward`` takes it;
before, the backward recomputed the forward. These tests prove:

* one forward per layer-direction in a compiled forward + backward, on every CPU backend; on a
  kernel backend (cpu here; triton in tests/test_export_kernel_backends.py) that forward is the
  backend's training form, whose saved activations are kept under the handle, and the backward
  runs only the backward kernel (no autograd graph kept, none differentiated);
* gradients of the input, the initial states and every parameter equal eager mode's (the same
  backend: bit for bit where eager runs the same per-layer calls);
* a kept graph is freed after its backward, and when no backward follows;
* a second backward through a retained graph, and a backward call with a handle that is not its
  own, recompute (right answers, never another call's graph); a bad handle raises;
* torch.export keeps the portable recompute operator, and double backward still raises.
"""

import gc

import pytest
import torch

import fastrnn
from fastrnn import backends, ops

CELLS = {"rnn_tanh": (fastrnn.RNN, {}), "lstm": (fastrnn.LSTM, {}), "gru": (fastrnn.GRU, {})}


def _cpu_available():
    return backends.get_backend("cpu").unavailable() is None


BACKENDS = [("reference", torch.float64), ("torch", torch.float64)]
BACKENDS += [("cpu", torch.float32)] if _cpu_available() else []


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    gc.collect()


@pytest.fixture
def layer_runs(monkeypatch):
    """How many times a backend ran a layer-direction (inside the operators)."""
    runs = []
    run_layer = backends.run_layer

    def counting(*args, **kwargs):
        runs.append(args[0].name)
        return run_layer(*args, **kwargs)

    monkeypatch.setattr(backends, "run_layer", counting)
    run_training_form = ops._run_training_form

    def counting_training_form(chosen, form, cell, *args):  # a kernel backend's forward, saving for its backward
        runs.append(cell)
        return run_training_form(chosen, form, cell, *args)

    monkeypatch.setattr(ops, "_run_training_form", counting_training_form)
    return runs


def _model(cell, backend, dtype, seed=0):
    torch.manual_seed(seed)
    cls, kwargs = CELLS[cell]
    return cls(5, 7, num_layers=2, bidirectional=True, backend=backend, dtype=dtype, **kwargs)


def _loss_and_grads(fn, model, x, hx):
    out, state = fn(x, hx)
    h = state[0] if isinstance(state, tuple) else state
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + h.square().sum()
    if isinstance(state, tuple):
        loss = loss + state[1].sin().sum()
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *model.parameters()]
    return [out.detach(), h.detach(), *torch.autograd.grad(loss, leaves)]


def _inputs(model, dtype):
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5, dtype=dtype, requires_grad=True)
    h0 = torch.randn(4, 3, 7, dtype=dtype, requires_grad=True)
    hx = (h0, torch.randn(4, 3, 7, dtype=dtype, requires_grad=True)) if model.cell.has_cell_state else h0
    return x, hx


@pytest.mark.parametrize("backend,dtype", BACKENDS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_one_forward_per_layer_direction_and_eager_gradients(cell, backend, dtype, layer_runs):
    model = _model(cell, backend, dtype)
    x, hx = _inputs(model, dtype)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    got = _loss_and_grads(compiled, model, x, hx)
    assert layer_runs == [cell] * 4, f"2 layers x 2 directions should run once each, ran {len(layer_runs)}"
    assert not ops._RECORDED, "the backward must take every kept graph"
    expected = _loss_and_grads(model, model, x, hx)
    # torch's module runs its whole stack in one call, the compiled graph one call per layer-direction
    tolerance = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for k, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **tolerance, msg=lambda m: f"tensor {k}: {m}")


def test_functional_with_lengths_and_reverse_on_inductor(layer_runs):
    """A variable-length reverse layer through Inductor: one forward, eager's gradients."""
    torch.manual_seed(2)
    cell = fastrnn.GRUCell(4, 6)
    x = torch.randn(5, 3, 4, requires_grad=True)
    h0 = torch.randn(3, 6, requires_grad=True)
    lengths = torch.tensor([5, 0, 3])

    def f(x, h0):
        out, h = fastrnn.functional.gru_layer(x, h0, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                              lengths=lengths, reverse=True)
        return out, h

    def grads(fn):
        out, h = fn(x, h0)
        loss = out.sin().sum() + h.square().sum()
        return [out.detach(), h.detach(), *torch.autograd.grad(loss, [x, h0, *cell.parameters()])]

    got = grads(torch.compile(f, fullgraph=True))
    assert layer_runs == ["gru"]
    for a, b in zip(got, grads(f)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_kept_graph_is_freed_without_a_backward():
    model = _model("lstm", "reference", torch.float64)
    compiled = torch.compile(lambda x: model(x)[0].sum(), backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    for _ in range(3):
        loss = compiled(x)
        assert len(ops._RECORDED) == 4  # kept while the loss (and its graph) lives
        del loss
        gc.collect()
        assert not ops._RECORDED


def test_second_backward_through_a_retained_graph_recomputes(layer_runs):
    model = _model("gru", "reference", torch.float64)
    compiled = torch.compile(lambda x: model(x)[0].square().sum(), backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True)
    loss = compiled(x)
    first = torch.autograd.grad(loss, [x, *model.parameters()], retain_graph=True)
    assert len(layer_runs) == 4
    second = torch.autograd.grad(loss, [x, *model.parameters()])
    assert len(layer_runs) == 8  # the kept graphs were used once; the second backward recomputes
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _layer_args(dtype=torch.float64, seed=3):
    torch.manual_seed(seed)
    x = torch.randn(4, 2, 3, dtype=dtype)
    h0 = torch.randn(2, 5, dtype=dtype)
    w_ih, w_hh = torch.randn(15, 3, dtype=dtype), torch.randn(15, 5, dtype=dtype)
    b_ih, b_hh = torch.randn(15, dtype=dtype), torch.randn(15, dtype=dtype)
    return x, h0, None, w_ih, w_hh, b_ih, b_hh, None


def _backward_through_op(handle, args, flags, grads):
    return ops.rnn_layer_recorded_backward_op(handle, "gru", *args, None, False, "reference", flags, *grads)


def test_backward_with_another_calls_handle_recomputes_for_its_own_inputs():
    """A handle names a graph of other inputs: the operator recomputes for the inputs it is given,
    never answers from that graph."""
    flags = [True, True, False, True, True, True, True, False]
    first, second = _layer_args(seed=3), _layer_args(seed=4)
    *_, handle = ops.rnn_layer_recorded_op("gru", *first, None, False, "reference", flags)
    grads = (torch.ones(4, 2, 5, dtype=torch.float64), torch.ones(2, 5, dtype=torch.float64),
             torch.empty(0, dtype=torch.float64))
    got = _backward_through_op(handle, second, flags, grads)
    expected = ops.rnn_layer_backward_op("gru", *second, None, False, "reference", *grads)
    for k, flag in enumerate(flags):
        if second[k] is not None and flag:
            torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)
    own = _backward_through_op(handle, first, flags, grads)  # still kept: the mismatch did not take it
    expected = ops.rnn_layer_backward_op("gru", *first, None, False, "reference", *grads)
    for k, flag in enumerate(flags):
        if first[k] is not None and flag:
            torch.testing.assert_close(own[k], expected[k])
    assert not ops._RECORDED


def test_bad_handle_and_flags_raise():
    args = _layer_args()
    grads = (torch.ones(4, 2, 5, dtype=torch.float64), torch.ones(2, 5, dtype=torch.float64),
             torch.empty(0, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="handle must be the int64 CPU scalar"):
        _backward_through_op(torch.zeros(3), args, [True] * 8, grads)
    with pytest.raises(RuntimeError, match="one flag for each"):
        ops.rnn_layer_recorded_op("gru", *args, None, False, "reference", [True] * 3)


def test_double_backward_through_the_recorded_operator_raises():
    """(torch.compile refuses double backward itself; the operator says why when called directly.)"""
    x, h0, _, w_ih, w_hh, b_ih, b_hh, _ = _layer_args()
    x.requires_grad_()
    out, _, _, _ = ops.rnn_layer_recorded_op("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, None, None, False,
                                             "reference", [True, False, False, False, False, False, False, False])
    (gx,) = torch.autograd.grad(out.square().sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through a traced fastrnn layer"):
        gx.sum().backward()


def test_export_keeps_the_portable_operator():
    model = _model("gru", "auto", torch.float32)
    x = torch.randn(4, 2, 5)
    program = torch.export.export(model, (x,))
    targets = {n.target for n in program.graph.nodes if n.op == "call_function"}
    assert torch.ops.fastrnn.rnn_layer.default in targets
    assert torch.ops.fastrnn.rnn_layer_recorded.default not in targets


CPU_CELLS = {**CELLS, "rnn_relu": (fastrnn.RNN, {"nonlinearity": "relu"})}


@pytest.mark.skipif(not _cpu_available(), reason="the cpu backend is not built here")
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "lengths"])
@pytest.mark.parametrize("cell", list(CPU_CELLS))
def test_kernel_backend_runs_each_kernel_once_and_gives_eager_gradients(cell, packed):
    """The cpu backend's training form: one forward and one backward kernel per layer-direction
    (the recomputing backward ran the forward kernel twice, the recorded graph ran the backward
    through a nested autograd call), bit for bit eager mode's numbers, with and without lengths."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from fastrnn.cpu import autograd as cpu_autograd
    from kernel_helpers import LaunchCounter

    torch.manual_seed(0)
    cls, kwargs = CPU_CELLS[cell]
    model = cls(5, 7, num_layers=2, bidirectional=True, backend="cpu", **kwargs)
    x, hx = _inputs(model, torch.float32)
    lengths = torch.tensor([6, 1, 4])

    def through(module):  # (packing outside: Dynamo does not trace pack_padded_sequence)
        def run(x, hx):
            out, state = module(pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x, hx)
            return (pad_packed_sequence(out)[0] if packed else out), state
        return run

    run = through(model)
    compiled = through(torch.compile(model, backend="aot_eager", fullgraph=True))
    _loss_and_grads(compiled, model, x, hx)  # compiles
    with LaunchCounter(cpu_autograd.LAUNCHES) as launches:
        got = _loss_and_grads(compiled, model, x, hx)
    assert (launches.count("forward"), launches.count("backward")) == (4, 4)
    assert not ops._RECORDED
    expected = _loss_and_grads(run, model, x, hx)
    for k, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"tensor {k}: {m}")


@pytest.mark.skipif(not _cpu_available(), reason="the cpu backend is not built here")
def test_training_form_keeps_the_kernels_saved_activations_and_no_graph():
    args = [t.float() if t is not None else None for t in _layer_args()]
    flags = [True] * 2 + [False] + [True] * 4 + [False]
    out, _, _, handle = ops.rnn_layer_recorded_op("gru", *args, None, False, "cpu", flags)
    record = ops._RECORDED[int(handle)]
    assert record.trained == "cpu" and record.leaves is None  # no autograd graph kept
    kept_out, workspace = record.outputs
    assert workspace.dtype == torch.float32 and workspace.numel() == 4 * 2 * 4 * 5  # GRU: 4 saved per unit and step
    assert torch.equal(kept_out, out)


@pytest.mark.parametrize("backend", ["torch"] + (["cpu"] if _cpu_available() else []))
def test_inductor_reusing_a_dead_output_buffer_leaves_the_backward_its_own(backend):
    """Inductor treats an operator's outputs as its buffers and writes a later result into the
    memory of one the graph no longer reads (here the layer's output, dead after ``out * 2``, gets
    ``mm``'s result). What a kept record reads in the backward (the training form's ``out``,
    oneDNN's saved output) must not be that memory: the gradients came out wrong by ~70."""
    torch.manual_seed(0)
    model = fastrnn.GRU(8, 8, backend=backend)
    w = torch.randn(8, 8)

    def f(x):
        out, _ = model(x)
        y = torch.mm((out * 2).view(-1, 8), w) + 1
        return (y * y).sum()

    x = torch.randn(5, 3, 8, requires_grad=True)
    leaves = [x, *model.parameters()]
    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(x), leaves)
    expected = torch.autograd.grad(f(x), leaves)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
