"""Compiled training without recompute (issue 21, item 4; fastrnn/ops.py's training form).

* A compiled forward+backward of a fastrnn model runs each layer-direction's forward once: on a
  kernel backend (``cpu`` here) the backward starts from the kernel's saved activations, which
  the training operator ``fastrnn::rnn_layer_train`` returns as its ``workspace`` output, instead
  of running the forward again (the launch counters say which kernels ran, and how often).
* The gradients of every parameter, the input and h0 / c0 equal eager mode's on the same backend
  (the same kernels, so the same numbers), for every cell, 2 layers, bidirectional, with lengths
  (PackedSequence), on backends ``reference``, ``torch``, ``cpu`` and ``auto``.
* Inference under compile and torch.export keep the plain operator (no workspace output); double
  backward through the training operator raises the traced-graph error.

AOTAutograd with ``backend="aot_eager"`` (Inductor's C++ compile is slow on a small CPU and adds
nothing to what is tested here).
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn.backends import forget_decisions
from fastrnn.cpu import backend as cpu_backend

CPU_BUILT = cpu_backend._extension_error() is None
needs_cpu = pytest.mark.skipif(not CPU_BUILT, reason=f"fastrnn._cpu is not usable here: {cpu_backend._extension_error()}")

CLASSES = {"rnn_tanh": (fastrnn.RNN, {}), "rnn_relu": (fastrnn.RNN, {"nonlinearity": "relu"}),
           "lstm": (fastrnn.LSTM, {}), "gru": (fastrnn.GRU, {})}


@pytest.fixture(autouse=True)
def _fresh():
    torch._dynamo.reset()
    forget_decisions()
    yield
    torch._dynamo.reset()
    forget_decisions()


def _model(kind, backend, dtype, **kw):
    torch.manual_seed(0)
    cls, extra = CLASSES[kind]
    return cls(3, 5, num_layers=2, bidirectional=True, backend=backend, dtype=dtype, **extra, **kw)


def _inputs(model, dtype, packed):
    torch.manual_seed(1)
    x = torch.randn(6, 4, 3, dtype=dtype, requires_grad=True)
    h0 = torch.randn(4, 4, 5, dtype=dtype, requires_grad=True)
    c0 = torch.randn(4, 4, 5, dtype=dtype, requires_grad=True) if model.cell.has_cell_state else None
    lengths = torch.tensor([6, 2, 5, 1]) if packed else None
    return x, h0, c0, lengths


def _step(fn, model, x, h0, c0, lengths):
    """Forward + backward of a fixed random projection of every output -> [outputs..., grads...]."""
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    out, state = fn(inp, h0 if c0 is None else (h0, c0))
    if lengths is not None:
        out = torch.nn.utils.rnn.pad_packed_sequence(out)[0]
    states = list(state) if isinstance(state, tuple) else [state]
    g = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [out] + states)
    leaves = [x, h0] + ([c0] if c0 is not None else []) + list(model.parameters())
    return [out] + states + list(torch.autograd.grad(loss, leaves))


def _assert_equal(compiled, eager, tol):
    assert len(compiled) == len(eager)
    for k, (a, b) in enumerate(zip(compiled, eager)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m: f"tensor {k}: {m}")


def _compiled(model):
    return torch.compile(model, backend="aot_eager", fullgraph=True)


# Exact on one layer-direction's kernels; the torch backend runs a whole eager stack as one torch
# call, whose backward sums the layers' float32 gradients in another order than per layer.
CASES = [("reference", torch.float64, 0.0), ("torch", torch.float32, 1e-5), ("auto", torch.float32, 1e-5),
         pytest.param("cpu", torch.float32, 0.0, marks=needs_cpu)]


@pytest.mark.parametrize("backend, dtype, tol", CASES)
@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "lengths"])
def test_compiled_training_equals_eager(kind, backend, dtype, tol, packed):
    model = _model(kind, backend, dtype)
    args = _inputs(model, dtype, packed)
    eager = _step(model, model, *args)
    compiled = _step(_compiled(model), model, *args)
    _assert_equal(compiled, eager, tol)


@needs_cpu
@pytest.mark.parametrize("kind", list(CLASSES))
def test_compiled_training_runs_each_forward_once(kind):
    """The test that failed before: the recomputing backward ran every forward kernel twice."""
    from fastrnn.cpu import autograd as cpu_autograd
    from kernel_helpers import LaunchCounter

    model = _model(kind, "cpu", torch.float32)
    args = _inputs(model, torch.float32, packed=False)
    compiled = _compiled(model)
    _step(compiled, model, *args)  # compiles
    with LaunchCounter(cpu_autograd.LAUNCHES) as launches:
        _step(compiled, model, *args)
    assert launches.count("forward") == 4  # 2 layers x 2 directions
    assert launches.count("backward") == 4


def _ops_in_graph(fn, *args):
    """The fastrnn operators AOTAutograd's forward graph calls, by name."""
    names = []

    def backend(gm, example_inputs):
        from torch._functorch.aot_autograd import aot_module_simplified

        def fw(graph, _):
            names.extend(str(n.target) for n in graph.graph.nodes if "fastrnn" in str(n.target))
            return graph

        return aot_module_simplified(gm, example_inputs, fw_compiler=fw, bw_compiler=lambda g, _: g)

    torch.compile(fn, backend=backend, fullgraph=True)(*args)
    return names


def test_training_records_the_training_operator_and_inference_the_plain_one():
    model = _model("lstm", "reference", torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    assert set(_ops_in_graph(lambda t: model(t)[0], x)) == {"fastrnn.rnn_layer_train.default"}
    with torch.no_grad():
        assert set(_ops_in_graph(lambda t: model(t)[0], x)) == {"fastrnn.rnn_layer.default"}


def test_export_keeps_the_portable_operator():
    model = _model("gru", "auto", torch.float32)
    x = torch.randn(4, 2, 3)
    program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if "fastrnn" in str(n.target)}
    assert targets == {"fastrnn.rnn_layer.default"}


def test_double_backward_through_the_training_operator_raises():
    """(Under torch.compile AOTAutograd refuses double backward first; called directly, the
    operator's own backward says why.)"""
    model = _model("gru", "reference", torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.zeros(2, 5, dtype=torch.float64)
    out, _, _, _ = torch.ops.fastrnn.rnn_layer_train("gru", x, h0, None, model.weight_ih_l0, model.weight_hh_l0,
                                                     model.bias_ih_l0, model.bias_hh_l0, None, None, False,
                                                     "reference")
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through a traced fastrnn layer"):
        gx.sum().backward()


def test_training_backward_operator_checks_its_workspace():
    model = _model("lstm", "reference", torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    h0 = torch.zeros(2, 5, dtype=torch.float64)
    w = [model.weight_ih_l0, model.weight_hh_l0, model.bias_ih_l0, model.bias_hh_l0]
    w = [t.detach() for t in w]
    out = torch.zeros(4, 2, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="workspace a 1-D float32 tensor"):
        torch.ops.fastrnn.rnn_layer_train_backward("lstm", x, h0, h0, *w, None, None, False, "reference", out,
                                                   torch.zeros(2, 2), out, h0, h0)
