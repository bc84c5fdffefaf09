"""torch.export and torch.jit.trace of fastrnn models (ONNX: tests/test_export_onnx.py).

Every layer-direction is one ``fastrnn::rnn_layer`` node (fastrnn/ops.py), so exported and traced
models run at any sequence length and batch size, not only the ones they were traced with. The
models (tests/tracing_models.py): a 2-layer LSTM, a bidirectional batch-first GRU, an Elman RNN
(relu), each with a given initial state.
"""

import io

import pytest
import torch
from torch.export import Dim

import fastrnn
from tracing_models import KINDS, dynamic_shapes, layer_directions, make_inputs, make_model

RNN_OPS = (torch.ops.fastrnn.rnn_layer.default,)


def _eager(model, inputs):
    return [t.detach() for t in model(*inputs)]


def _assert_all_close(actual, expected, rtol, atol):
    assert len(actual) == len(expected)
    for k, (a, b) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(torch.as_tensor(a), b, rtol=rtol, atol=atol, msg=lambda m: f"output {k}: {m}")


# ------------------------------------------------------------------------------ torch.export


@pytest.mark.parametrize("kind", list(KINDS))
def test_export_has_one_node_per_layer_direction_and_runs_at_other_shapes(kind):
    model = make_model(kind)
    ep = torch.export.export(model, make_inputs(model, 6, 3), dynamic_shapes=dynamic_shapes(model))
    calls = [n for n in ep.graph.nodes if n.op == "call_function"]
    rnn_nodes = [n for n in calls if n.target in RNN_OPS]
    assert len(rnn_nodes) == layer_directions(model)
    # A few nodes per layer (select of h0/c0, getitem of the outputs, cat/stack), none per step.
    assert len(calls) <= 8 * layer_directions(model) + 4, [n.target for n in calls]

    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for seq_len, batch in ((11, 2), (3, 5)):
        inputs = make_inputs(model, seq_len, batch, seed=seq_len)
        _assert_all_close(loaded(*inputs), _eager(model, inputs), rtol=1e-12, atol=1e-12)


def test_exported_module_backward_matches_eager():
    """The op's registered autograd (recompute on the chosen backend) gives eager's gradients."""
    model = make_model("lstm_2layer")
    ep = torch.export.export(model, make_inputs(model, 6, 3), dynamic_shapes=dynamic_shapes(model))
    exported = ep.module()

    def grads(fn):
        inputs = [t.requires_grad_() for t in make_inputs(model, 9, 2, seed=5)]
        out, h, c = fn(*inputs)
        loss = out.sin().sum() + h.square().sum() + (c * c.cos()).sum()
        params = list(model.parameters())
        return [out, h, c] + list(torch.autograd.grad(loss, inputs + params))

    _assert_all_close(grads(exported), grads(model), rtol=1e-10, atol=1e-12)


def test_exported_model_picks_its_backend_when_it_runs(monkeypatch):
    """backend= is in the op's schema; the op's implementation resolves it at run time (so
    use_backend() and FASTRNN_BACKEND apply to an exported "auto" model too)."""
    from fastrnn.backends import _REGISTRY, Backend
    from fastrnn.reference import reference_layer

    def negated(*args):
        out, h, c = reference_layer(*args)
        return -out, h, c

    monkeypatch.setitem(_REGISTRY, "negated", Backend("negated", priority=-1, run_layer=negated, auto=False))
    model = make_model("elman_relu")
    inputs = make_inputs(model, 6, 3)
    ep = torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes(model))
    (node,) = [n for n in ep.graph.nodes if n.target in RNN_OPS]
    assert node.args[-1] == "auto"
    expected = _eager(model, inputs)
    _assert_all_close(ep.module()(*inputs), expected, 0, 0)
    with fastrnn.use_backend("negated"):
        out, h = ep.module()(*inputs)
    torch.testing.assert_close(out, -expected[0], rtol=0, atol=0)
    model.rnn.backend = "negated"
    ep = torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes(model))
    (node,) = [n for n in ep.graph.nodes if n.target in RNN_OPS]
    assert node.args[-1] == "negated"
    torch.testing.assert_close(ep.module()(*inputs)[0], -expected[0], rtol=0, atol=0)


# ------------------------------------------------------------------------------ torch.jit


@pytest.mark.parametrize("kind", list(KINDS))
def test_jit_trace_runs_at_other_lengths(kind):
    model = make_model(kind)
    traced = torch.jit.trace(model, make_inputs(model, 5, 3))
    nodes = [n.kind() for n in traced.inlined_graph.nodes()]
    assert nodes.count("fastrnn::rnn_layer") == layer_directions(model)
    for seq_len, batch in ((7, 3), (2, 4)):
        inputs = make_inputs(model, seq_len, batch, seed=seq_len)
        _assert_all_close(traced(*inputs), _eager(model, inputs), rtol=1e-12, atol=1e-12)


def test_double_backward_through_the_operator_is_a_clear_error():
    """The operator's backward is not differentiable (eager mode is, and never uses it)."""
    model = make_model("elman_relu")
    inputs = make_inputs(model, 6, 3)
    exported = torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes(model)).module()
    x = inputs[0].requires_grad_()
    out, _ = exported(x, inputs[1])
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through a traced fastrnn layer"):
        torch.autograd.grad(gx.sum(), x)
