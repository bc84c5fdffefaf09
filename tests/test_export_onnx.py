"""ONNX export of fastrnn models (torch.onnx.export(dynamo=True) + fastrnn.onnx's translation),
run by onnxruntime at sequence lengths and batch sizes other than the export's.

Each layer-direction becomes one ONNX LSTM / GRU / RNN node (fastrnn/onnx.py). The models
(tests/tracing_models.py): a 2-layer LSTM, a bidirectional batch-first GRU, an Elman RNN (relu),
each with a given initial state; plus per-sequence lengths through fastrnn.functional.
"""

import pytest
import torch
from torch.export import Dim

import fastrnn
from test_export import _assert_all_close, _eager
from tracing_models import KINDS, dynamic_shapes, layer_directions, make_inputs, make_model

onnx = pytest.importorskip("onnx", reason="onnx is a test dependency (requirements.txt)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (requirements.txt)")
pytest.importorskip("onnxscript", reason="onnxscript is a test dependency (requirements.txt)")

import fastrnn.onnx  # noqa: E402  (after the skips: needs onnxscript when exporting)

ONNX_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def _onnx_session(model, inputs, dynamic):
    program = fastrnn.onnx.export(model.eval(), inputs, dynamic_shapes=dynamic, verbose=False)
    proto = program.model_proto
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return proto, session


def _run_session(session, inputs):
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})


@pytest.mark.parametrize("kind", list(KINDS))
def test_onnx_uses_onnx_recurrent_operators_and_runs_at_other_lengths(kind):
    model = make_model(kind, dtype=torch.float32)
    proto, session = _onnx_session(model, make_inputs(model, 6, 3, torch.float32), dynamic_shapes(model))
    op_types = [node.op_type for node in proto.graph.node]
    cell = ONNX_OPS[model.rnn.cell.name]
    assert op_types.count(cell) == layer_directions(model), op_types
    assert not {"Loop", "Scan"} & set(op_types)
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


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_onnx_sequence_lens_match_fastrnn_lengths(cell):
    """lengths -> sequence_lens: zero outputs and a frozen state past each length, and the reverse
    direction starting at each sequence's own last element, as fastrnn does."""
    model = _Functional(cell)
    seq_len, batch = Dim("T", min=2), Dim("B", min=2)
    dynamic = ({0: seq_len, 1: batch}, {0: batch}, {0: batch})
    example = (torch.randn(6, 3, 3), torch.tensor([6, 2, 4]), torch.randn(3, 5))
    proto, session = _onnx_session(model, example, dynamic)
    assert [n.op_type for n in proto.graph.node].count(ONNX_OPS[cell]) == 2
    inputs = (torch.randn(9, 4, 3), torch.tensor([3, 9, 1, 5]), torch.randn(4, 5))
    _assert_all_close(_run_session(session, inputs), _eager(model, inputs), rtol=1e-5, atol=1e-5)


def test_onnx_export_of_a_projection_lstm_is_a_clear_error():
    model = make_model("lstm_2layer", dtype=torch.float32, proj_size=2)
    inputs = make_inputs(model, 6, 3, torch.float32)
    inputs = (inputs[0], inputs[1][..., :2].contiguous(), inputs[2])
    with pytest.raises(Exception, match="proj_size > 0 cannot be exported to ONNX"):
        fastrnn.onnx.export(model, inputs, dynamic_shapes=dynamic_shapes(model), verbose=False)




def test_onnx_export_of_bfloat16_is_a_clear_error():
    model = make_model("elman_relu", dtype=torch.bfloat16)
    with pytest.raises(Exception, match="take float16, float32 and float64 only"):
        fastrnn.onnx.export(model.eval(), make_inputs(model, 6, 3, torch.bfloat16), verbose=False)


def test_onnx_export_without_fastrnn_translation_fails_instead_of_writing_a_wrong_model(tmp_path):
    model = make_model("elman_relu", dtype=torch.float32).eval()
    inputs = make_inputs(model, 6, 3, torch.float32)
    with pytest.raises(Exception, match="fastrnn.rnn_layer"):
        torch.onnx.export(model, inputs, dynamo=True, verbose=False)
    with pytest.raises(Exception, match="fastrnn::rnn_layer"):
        torch.onnx.export(model, inputs, str(tmp_path / "legacy.onnx"), dynamo=False)
