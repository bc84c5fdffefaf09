"""fastrnn.convert: torch.nn's recurrent modules in a model swapped for fastrnn's and back, with
the same Parameters, parametrizations, hooks, training mode; outputs and gradients unchanged."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal, weight_norm

import fastrnn
from helpers import assert_close, flat

D = torch.float64


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 5, dtype=D))
        self.lstm = nn.LSTM(5, 8, num_layers=2, proj_size=3, dropout=0.2, dtype=D)
        self.gru = nn.GRU(3, 6, bidirectional=True, batch_first=False, dtype=D)
        self.rnn = nn.RNN(12, 4, nonlinearity="relu", bias=False, dtype=D)
        self.cells = nn.ModuleList([nn.LSTMCell(4, 4, dtype=D), nn.GRUCell(4, 4, dtype=D),
                                    nn.RNNCell(4, 4, nonlinearity="relu", dtype=D)])

    def forward(self, x):
        y = self.rnn(self.gru(self.lstm(self.encoder(x))[0])[0])[0]
        h, c = self.cells[0](y[-1])
        return y, h, c, self.cells[2](self.cells[1](h))


def _run(model, x):
    for p in model.parameters():
        p.grad = None
    x.grad = None
    out = flat(model(x))
    sum((o * torch.cos(torch.arange(o.numel(), dtype=D)).view_as(o)).sum() for o in out).backward()
    return [o.detach() for o in out] + [x.grad] + [p.grad for p in model.parameters() if p.requires_grad]


def _model():
    torch.manual_seed(90)
    model = Model().eval()  # no dropout, so outputs are comparable
    model.gru.weight_hh_l0_reverse.requires_grad_(False)
    return model


def test_convert_and_back():
    model = _model()
    x = torch.randn(6, 2, 4, dtype=D, requires_grad=True)
    expected = _run(model, x)
    params = dict(model.named_parameters())
    keys = list(model.state_dict())

    fast = fastrnn.convert(model)
    assert fast is model  # converted in place, as convert_sync_batchnorm does with children
    assert [type(m) for m in (fast.lstm, fast.gru, fast.rnn, *fast.cells)] == [
        fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN, fastrnn.LSTMCell, fastrnn.GRUCell, fastrnn.RNNCell]
    assert type(fast.encoder[0]) is nn.Linear
    assert fast.rnn.nonlinearity == "relu" and fast.rnn.bias is False and fast.lstm.proj_size == 3
    assert fast.lstm.dropout == 0.2 and fast.gru.bidirectional and fast.cells[2].nonlinearity == "relu"
    converted = dict(fast.named_parameters())
    assert converted.keys() == params.keys() and all(converted[k] is params[k] for k in params)
    assert list(fast.state_dict()) == keys
    assert not any(m.training for m in fast.modules())
    assert not fast.gru.weight_hh_l0_reverse.requires_grad
    got = _run(fast, x)
    assert len(got) == len(expected)
    for u, v in zip(got, expected):
        assert_close(u, v)

    back = fastrnn.convert(fast, to="torch")
    assert [type(m) for m in (back.lstm, back.gru, back.rnn, *back.cells)] == [
        nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell]
    assert all(a is b for a, b in zip(back.parameters(), params.values()))
    for u, v in zip(_run(back, x), expected):  # torch.nn's own forward again: bit for bit
        assert torch.equal(u, v)


def test_training_mode_backend_and_top_level_module():
    torch.manual_seed(91)
    lstm = nn.LSTM(3, 5)
    lstm.train()
    fast = fastrnn.convert(lstm, backend="reference")
    assert type(fast) is fastrnn.LSTM and fast.training and fast.backend == "reference"
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in fast.parameters())
    assert type(fastrnn.convert(fast, to="torch")) is nn.LSTM


def test_parametrizations_are_kept():
    torch.manual_seed(92)
    lstm = nn.LSTM(3, 4, dtype=D)
    orthogonal(lstm, "weight_hh_l0")
    weight_norm(lstm, "weight_ih_l0")
    x = torch.randn(5, 2, 3, dtype=D, requires_grad=True)
    expected = _run(lstm, x)
    originals = list(lstm.parametrizations.parameters())
    keys = list(lstm.state_dict())

    fast = fastrnn.convert(lstm)
    assert parametrize.type_before_parametrizations(fast) is fastrnn.LSTM
    assert parametrize.is_parametrized(fast, "weight_hh_l0") and parametrize.is_parametrized(fast, "weight_ih_l0")
    assert all(a is b for a, b in zip(fast.parametrizations.parameters(), originals))
    assert list(fast.state_dict()) == keys
    for u, v in zip(_run(fast, x), expected):  # gradients reach the parametrizations' originals
        assert_close(u, v)
    back = fastrnn.convert(fast, to="torch")
    assert parametrize.type_before_parametrizations(back) is nn.LSTM
    for u, v in zip(_run(back, x), expected):
        assert torch.equal(u, v)


def test_hooks_are_kept():
    seen = []
    gru = nn.GRU(3, 4)
    gru.register_forward_hook(lambda module, args, out: seen.append(type(module)))
    fast = fastrnn.convert(gru)
    fast(torch.randn(2, 1, 3))
    assert seen == [fastrnn.GRU]


def test_shared_module_stays_shared():
    lstm = nn.LSTM(3, 4)
    model = nn.ModuleDict({"a": lstm, "b": nn.Sequential(lstm)})
    fastrnn.convert(model)
    assert type(model["a"]) is fastrnn.LSTM and model["b"][0] is model["a"]


def test_subclass_is_left_alone_with_a_warning():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(3, 4), nn.GRU(4, 4))
    match = r"left module '0' \(.*MyLSTM, a subclass of torch.nn.modules.rnn.LSTM\).*patch"
    with pytest.warns(UserWarning, match=match):
        fastrnn.convert(model)
    assert type(model[0]) is MyLSTM and type(model[1]) is fastrnn.GRU


def test_bad_arguments():
    with pytest.raises(ValueError, match="'fastrnn' or 'torch', got 'jax'"):
        fastrnn.convert(nn.LSTM(2, 2), to="jax")
    with pytest.raises(TypeError, match="torch.nn.Module, got str"):
        fastrnn.convert("lstm")
    with pytest.raises(ValueError, match="backend"):
        fastrnn.convert(nn.LSTM(2, 2), backend="nope")
    with pytest.raises(ValueError, match="takes no backend"):
        fastrnn.convert(fastrnn.LSTM(2, 2), to="torch", backend="reference")
