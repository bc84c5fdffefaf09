"""torch.ao.quantization.quantize_dynamic on models with fastrnn modules: quantized exactly as
the torch.nn twins are when named in qconfig_spec, and a warning (never silence) when not."""

import warnings

import pytest
import torch
from torch import nn

import fastrnn

qd = pytest.importorskip("torch.ao.nn.quantized.dynamic", reason="torch without torch.ao.quantization")
# torch >= 2.10 deprecates torch.ao.quantization (and quantized tensor creation) but runs it.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")]


class Model(nn.Module):
    def __init__(self, lib):
        super().__init__()
        self.lstm = lib.LSTM(4, 8, num_layers=2)
        self.gru = lib.GRU(8, 6, bidirectional=True)
        self.cell = lib.LSTMCell(12, 5)
        self.gru_cell = lib.GRUCell(5, 5)
        self.rnn_cell = lib.RNNCell(5, 5, nonlinearity="relu")
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        y = self.gru(self.lstm(x)[0])[0]
        h, _ = self.cell(y[-1])
        return self.head(self.rnn_cell(self.gru_cell(h)))


def _twins():
    torch.manual_seed(100)
    ref = Model(nn).eval()
    fast = Model(fastrnn).eval()
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def _fastrnn_warnings(record):
    return [str(w.message) for w in record if "fastrnn" in str(w.message)]


def test_quantized_as_torch_nn_when_named():
    ref, fast = _twins()
    x = torch.randn(7, 2, 4)
    q_ref = torch.ao.quantization.quantize_dynamic(ref, dtype=torch.qint8)
    spec = {nn.Linear, fastrnn.LSTM, fastrnn.GRU, fastrnn.LSTMCell, fastrnn.GRUCell, fastrnn.RNNCell}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        q_fast = torch.ao.quantization.quantize_dynamic(fast, spec, dtype=torch.qint8)
    assert _fastrnn_warnings(record) == []
    for name, cls in [("lstm", qd.LSTM), ("gru", qd.GRU), ("cell", qd.LSTMCell), ("gru_cell", qd.GRUCell),
                      ("rnn_cell", qd.RNNCell), ("head", qd.Linear)]:
        assert type(getattr(q_fast, name)) is cls, name
        assert type(getattr(q_ref, name)) is cls, name
    assert isinstance(fast.lstm, fastrnn.LSTM)  # inplace=False: the float model is untouched
    assert torch.equal(q_fast(x), q_ref(x))  # the same quantized kernels on the same weights


@pytest.mark.parametrize("spec", [None, {nn.Linear, nn.LSTM, nn.GRU}], ids=["default", "torch.nn-classes"])
def test_warns_when_left_in_floating_point(spec):
    _, fast = _twins()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        q = torch.ao.quantization.quantize_dynamic(fast, spec, dtype=torch.qint8)
    left = sorted(m.split(" is left in floating point")[0] for m in _fastrnn_warnings(record))
    assert left == ["fastrnn.GRU", "fastrnn.GRUCell", "fastrnn.LSTM", "fastrnn.LSTMCell", "fastrnn.RNNCell"]
    assert all("fastrnn.convert(model, to='torch')" in m for m in _fastrnn_warnings(record))
    assert type(q.lstm) is fastrnn.LSTM and type(q.head) is qd.Linear


def test_elman_rnn_as_torch_nn():
    """torch has no dynamic quantized nn.RNN: fastrnn.RNN not named is silent, named warns."""
    model = nn.Sequential(fastrnn.RNN(3, 4))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.ao.quantization.quantize_dynamic(model, dtype=torch.qint8)
    assert _fastrnn_warnings(record) == []
    with pytest.warns(UserWarning, match="no dynamic quantized Elman RNN"):
        q = torch.ao.quantization.quantize_dynamic(model, {fastrnn.RNN}, dtype=torch.qint8)
    assert type(q[0]) is fastrnn.RNN


def test_qconfig_attribute_behaves_as_torch_nn():
    lstm = fastrnn.LSTM(2, 3)
    assert not hasattr(lstm, "qconfig")
    lstm.qconfig = torch.ao.quantization.default_dynamic_qconfig
    assert lstm.qconfig is torch.ao.quantization.default_dynamic_qconfig
    del lstm.qconfig
    assert not hasattr(lstm, "qconfig")
