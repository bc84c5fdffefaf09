"""One backend decision per module or cell call in eager mode (issue 19).

Every path to a backend goes through :func:`fastrnn.backends.explain` (``choose`` and
``run_layer`` call it); counting its calls counts the decisions a forward takes. A stack of
layers x directions runs wholly on the backend its forward chose.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import backends

D = torch.float64


@pytest.fixture
def decisions(monkeypatch):
    """A list that gets one entry (the chosen backend) per decision taken."""
    taken = []
    explain = backends.explain
    backends.forget_decisions()  # a decision remembered by an earlier test would not be counted

    def counting(problem, argument=backends.AUTO):
        choice = explain(problem, argument)
        taken.append(choice.backend)
        return choice

    monkeypatch.setattr(backends, "explain", counting)
    return taken


def _runs(monkeypatch, name):
    """Count the run_layer calls of backend ``name``."""
    calls = []
    backend = backends.get_backend(name)
    run = backend.layer_runner()
    monkeypatch.setattr(backend, "run_layer", lambda *args: calls.append(1) or run(*args))
    return calls


@pytest.mark.parametrize("backend", ["reference", "torch", "auto"])
@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN])
def test_one_decision_per_module_call(cls, backend, decisions, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    model = cls(3, 5, num_layers=2, bidirectional=True, dtype=D, backend=backend)
    x = torch.randn(4, 2, 3, dtype=D)
    calls = _runs(monkeypatch, "reference")
    out = model(x)
    assert len(decisions) == 1, decisions
    if backend == "reference":  # the whole stack on the one backend: 2 layers x 2 directions
        assert len(calls) == 4
    packed = pack_padded_sequence(x, torch.tensor([4, 2]))
    decisions.clear()
    model(packed)
    assert len(decisions) == 1, decisions
    assert out[0].shape == (4, 2, 10)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("cls", [fastrnn.LSTMCell, fastrnn.GRUCell, fastrnn.RNNCell])
def test_one_decision_per_cell_call(cls, backend, decisions, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    cell = cls(3, 5, dtype=D, backend=backend)
    cell(torch.randn(2, 3, dtype=D))
    assert len(decisions) == 1, decisions


def test_one_decision_per_functional_call(decisions):
    w_ih, w_hh = torch.randn(20, 3, dtype=D), torch.randn(20, 5, dtype=D)
    fastrnn.functional.lstm_layer(torch.randn(4, 2, 3, dtype=D), None, w_ih, w_hh, backend="reference")
    assert decisions == ["reference"]


def test_a_remembered_cell_decision_follows_the_settings(monkeypatch):
    """A cell step decides by a tuple key (backends.choose_by_key): a change of FASTRNN_BACKEND or
    of use_backend() between steps is a new decision, not the remembered one."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    cell = fastrnn.GRUCell(3, 5, dtype=D)
    x = torch.randn(1, 3, dtype=D)
    calls = _runs(monkeypatch, "reference")
    cell(x)
    assert calls == []  # auto on the CPU: torch's cell kernel
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    cell(x)
    assert calls == [1]
    monkeypatch.delenv(backends.ENV_VAR)
    cell(x)
    assert calls == [1]
    with fastrnn.use_backend("reference"):
        cell(x)
    assert calls == [1, 1]
