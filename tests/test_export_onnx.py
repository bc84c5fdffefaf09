"""ONNX export of fastrnn models with a plain torch.onnx.export call (both exporters, no
fastrnn-specific argument), run by onnxruntime at sequence lengths and batch sizes other than the
export's.

Each layer-direction becomes one ONNX LSTM / GRU / RNN node (fastrnn/onnx.py); under ``auto`` the
legacy exporter records torch's own kernels as for torch.nn and exports them itself (one node per
layer). The models (tests/tracing_models.py): a 2-layer LSTM, a bidirectional batch-first GRU, an
Elman RNN (relu), each with a given initial state; plus per-sequence lengths through
fastrnn.functional.
"""

import io

import pytest
import torch
from torch.export import Dim
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from test_export import _assert_all_close, _eager
from tracing_models import KINDS, dynamic_shapes, layer_directions, make_inputs, make_model

onnx = pytest.importorskip("onnx", reason="onnx is a test dependency (requirements.txt)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (requirements.txt)")
pytest.importorskip("onnxscript", reason="onnxscript is a test dependency (requirements.txt)")

import fastrnn.onnx  # noqa: E402  (after the skips)

ONNX_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def _export(model, inputs, dynamo: bool, dynamic=None, axes=None) -> bytes:
    """A plain torch.onnx.export call, as a user writes it; the ONNX model's bytes."""
    f = io.BytesIO()
    if dynamo:
        torch.onnx.export(model, inputs, f, dynamic_shapes=dynamic, verbose=False)
    else:
        names = [f"input{k}" for k in range(len(inputs))]
        torch.onnx.export(model, inputs, f, dynamo=False, input_names=names,
                          dynamic_axes=dict(zip(names, axes)) if axes else None)
    return f.getvalue()


def _session(proto_bytes):
    return ort.InferenceSession(proto_bytes, providers=["CPUExecutionProvider"])


def _legacy_axes(model):
    """dynamic_axes of (x, h0[, c0]) for the TorchScript exporter: T and B of x, B of the states."""
    x_axes = {0: "B", 1: "T"} if model.rnn.batch_first else {0: "T", 1: "B"}
    return [x_axes] + [{1: "B"}] * (1 + model.rnn.cell.has_cell_state)


def _run_session(session, inputs):
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_plain_onnx_export_uses_onnx_recurrent_operators_and_runs_at_other_lengths(kind, dynamo, backend, request):
    if backend == "auto":
        request.getfixturevalue("auto_backend")  # no FASTRNN_BACKEND: what the module itself picks
    model = make_model(kind, dtype=torch.float32, backend=backend).eval()
    proto_bytes = _export(model, make_inputs(model, 6, 3, torch.float32), dynamo, dynamic_shapes(model),
                          _legacy_axes(model))
    op_types = [node.op_type for node in onnx.load_from_string(proto_bytes).graph.node]
    cell = ONNX_OPS[model.rnn.cell.name]
    # The legacy exporter records torch's own kernels under auto on the CPU (as for torch.nn):
    # one node per layer, a bidirectional one included; else one per layer-direction.
    nodes = model.rnn.num_layers if (backend == "auto" and not dynamo) else layer_directions(model)
    assert op_types.count(cell) == nodes, op_types
    assert not {"Loop", "Scan"} & set(op_types)
    session = _session(proto_bytes)
    for seq_len, batch in ((13, 2), (4, 5)):
        inputs = make_inputs(model, seq_len, batch, torch.float32, seed=seq_len)
        _assert_all_close(_run_session(session, inputs), _eager(model, inputs), rtol=1e-5, atol=1e-5)


class _Functional(torch.nn.Module):
    """One layer of a cell through fastrnn.functional with per-sequence lengths, both directions."""

    def __init__(self, cell: str):
        super().__init__()
        torch.manual_seed(3)
        self.cell = fastrnn.cells.get_cell(cell)
        gates = self.cell.num_gates * 5
        self.w_ih = torch.nn.Parameter(torch.randn(gates, 3) * 0.5)
        self.w_hh = torch.nn.Parameter(torch.randn(gates, 5) * 0.5)
        self.b_ih = torch.nn.Parameter(torch.randn(gates) * 0.5)
        self.b_hh = torch.nn.Parameter(torch.randn(gates) * 0.5)

    def forward(self, x, lengths, h0):
        c0 = torch.tanh(h0) if self.cell.has_cell_state else None
        args = (self.cell, x, h0, c0, self.w_ih, self.w_hh, self.b_ih, self.b_hh)
        fwd, h_f, _ = fastrnn.functional.rnn_layer(*args, lengths=lengths)
        bwd, h_b, _ = fastrnn.functional.rnn_layer(*args, lengths=lengths, reverse=True)
        return fwd, bwd, h_f, h_b


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_onnx_sequence_lens_match_fastrnn_lengths(cell, dynamo):
    """lengths -> sequence_lens: zero outputs and a frozen state past each length, and the reverse
    direction starting at each sequence's own last element, as fastrnn does."""
    model = _Functional(cell)
    seq_len, batch = Dim("T", min=2), Dim("B", min=2)
    dynamic = ({0: seq_len, 1: batch}, {0: batch}, {0: batch})
    axes = [{0: "T", 1: "B"}, {0: "B"}, {0: "B"}]
    example = (torch.randn(6, 3, 3), torch.tensor([6, 2, 4]), torch.randn(3, 5))
    proto_bytes = _export(model, example, dynamo, dynamic, axes)
    assert [n.op_type for n in onnx.load_from_string(proto_bytes).graph.node].count(ONNX_OPS[cell]) == 2
    inputs = (torch.randn(9, 4, 3), torch.tensor([3, 9, 1, 5]), torch.randn(4, 5))
    _assert_all_close(_run_session(_session(proto_bytes), inputs), _eager(model, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_of_a_projection_lstm_is_a_clear_error(dynamo):
    model = make_model("lstm_2layer", dtype=torch.float32, proj_size=2, backend="reference").eval()
    inputs = make_inputs(model, 6, 3, torch.float32)
    inputs = (inputs[0], inputs[1][..., :2].contiguous(), inputs[2])
    with pytest.raises(Exception, match="proj_size > 0 cannot be exported to ONNX"):
        _export(model, inputs, dynamo)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_of_bfloat16_is_a_clear_error(dynamo):
    model = make_model("elman_relu", dtype=torch.bfloat16, backend="reference").eval()
    with pytest.raises(Exception, match="take float16, float32 and float64 only"):
        _export(model, make_inputs(model, 6, 3, torch.bfloat16), dynamo)


class _Packed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = fastrnn.GRU(3, 5)

    def forward(self, x, lengths):
        return self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))[1]


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_of_a_packed_sequence_model_is_a_clear_error(dynamo):
    """Documented (README, fastrnn/onnx.py): refused at export time, not a model that runs wrong."""
    model = _Packed().eval()
    with pytest.raises(Exception, match="PackedSequence cannot be exported to ONNX"):
        _export(model, (torch.randn(6, 3, 3), torch.tensor([6, 2, 4])), dynamo)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_of_float64_writes_a_double_model(dynamo):
    """float64 exports ONNX's double-precision operators (documented: onnxruntime has no double
    kernels for them, so it cannot run this model; onnx's checker accepts it)."""
    model = make_model("gru_bidirectional", backend="reference").eval()
    proto = onnx.load_from_string(_export(model, make_inputs(model, 6, 3), dynamo, dynamic_shapes(model),
                                          _legacy_axes(model)))
    onnx.checker.check_model(proto)
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == 2
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_an_exported_program_converts_with_the_translation_table():
    """A program made earlier by torch.export holds fastrnn::rnn_layer nodes: fastrnn.onnx.export
    (torch.onnx.export + fastrnn.onnx.translation_table()) maps each to one ONNX node."""
    model = make_model("lstm_2layer", dtype=torch.float32).eval()
    ep = torch.export.export(model, make_inputs(model, 6, 3, torch.float32), dynamic_shapes=dynamic_shapes(model))
    assert any(n.target == torch.ops.fastrnn.rnn_layer.default for n in ep.graph.nodes)
    program = fastrnn.onnx.export(ep, (), verbose=False)
    proto = program.model_proto
    assert [n.op_type for n in proto.graph.node].count("LSTM") == 2
    inputs = make_inputs(model, 9, 2, torch.float32, seed=9)
    _assert_all_close(_run_session(_session(proto.SerializeToString()), inputs), _eager(model, inputs),
                      rtol=1e-5, atol=1e-5)


def test_a_cell_without_an_onnx_operator_is_a_clear_error():
    """A cell added to fastrnn.cells (see its checklist) exports only once fastrnn/onnx.py maps it."""
    with pytest.raises(fastrnn.onnx.OnnxExportError, match="cannot be exported to ONNX"):
        fastrnn.onnx._check_exportable("mgu", torch.float32, False)
