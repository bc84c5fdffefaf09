"""fastrnn.patch(): torch.nn's recurrent classes, their subclasses and isinstance-checking
wrappers run fastrnn's forward (its backend dispatch) with unchanged outputs and gradients."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import backends
from fastrnn.reference import reference_layer
from helpers import CELLS, MODULES, assert_close, flat

D = torch.float64
PATCHED = (nn.RNNBase, nn.RNN, nn.LSTM, nn.GRU, nn.RNNCellBase, nn.RNNCell, nn.LSTMCell, nn.GRUCell)


class ForecastingLSTM(nn.LSTM):
    """A library's subclass overriding only __init__ (as pytorch-forecasting's LSTM)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.library_flag = True


class DoublingLSTM(nn.LSTM):
    """A subclass whose forward post-processes super().forward."""

    def forward(self, input, hx=None):
        out, state = super().forward(input, hx)
        return 2 * out, state


class RecurrentPolicy(nn.Module):
    """A wrapper that type-checks torch.nn.LSTM (as torchrl's LSTMModule) and calls it."""

    def __init__(self, lstm):
        super().__init__()
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"expected a torch.nn.LSTM, got {type(lstm).__name__}")
        self.lstm = lstm
        self.head = nn.Linear(lstm.proj_size or lstm.hidden_size, 2, dtype=D)

    def forward(self, x, hx):
        out, hx = self.lstm(x, hx)
        return self.head(out), hx


@pytest.fixture
def reference_calls(monkeypatch):
    """Counts the layer-directions fastrnn's reference backend runs."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    calls = []
    monkeypatch.setattr(backends.get_backend("reference"), "run_layer",
                        lambda *a, **k: calls.append(1) or reference_layer(*a, **k))
    return calls


def _outputs_and_grads(module, args, leaves):
    """Outputs, and gradients of ``leaves`` and parameters; ``args``: a tuple, or makes one."""
    for t in leaves:
        t.grad = None
    module.zero_grad(set_to_none=True)
    out = flat(module(*(args() if callable(args) else args)))
    sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in out).backward()
    return [o.detach() for o in out] + [t.grad for t in leaves] + [p.grad for p in module.parameters()]


def _check_patched_matches(module, args, leaves, reference_calls, expected_calls):
    unpatched = _outputs_and_grads(module, args, leaves)
    assert reference_calls == []  # torch.nn's own forward
    with fastrnn.patch():
        with fastrnn.use_backend("reference"):
            patched = _outputs_and_grads(module, args, leaves)
    assert len(reference_calls) == expected_calls  # really ran fastrnn's dispatch
    assert len(patched) == len(unpatched)
    for u, v in zip(patched, unpatched):
        assert_close(u, v)


def _leaf(*shape):
    return torch.randn(*shape, dtype=D, requires_grad=True)


@pytest.mark.parametrize("cls", [ForecastingLSTM, DoublingLSTM])
def test_subclass_of_torch_lstm(cls, reference_calls):
    torch.manual_seed(80)
    lstm = cls(5, 12, num_layers=2, bidirectional=True, dtype=D)
    x = _leaf(6, 3, 5)
    _check_patched_matches(lstm, (x,), [x], reference_calls, expected_calls=4)


def test_isinstance_checking_wrapper(reference_calls):
    torch.manual_seed(81)
    with fastrnn.patch():  # built inside the block: still a torch.nn.LSTM, so the check passes
        policy = RecurrentPolicy(nn.LSTM(4, 8, proj_size=3, dtype=D))
    x, h0, c0 = _leaf(5, 2, 4), _leaf(1, 2, 3), _leaf(1, 2, 8)
    _check_patched_matches(policy, (x, (h0, c0)), [x, h0, c0], reference_calls, expected_calls=1)


@pytest.mark.parametrize("kind", list(MODULES))
def test_every_module_kind_with_packed_input(kind, reference_calls):
    torch.manual_seed(82)
    torch_cls, _, extra = MODULES[kind]
    module = torch_cls(3, 7, num_layers=2, batch_first=True, dtype=D, **extra)
    x = _leaf(4, 6, 3)
    lengths = torch.tensor([6, 2, 5, 1])
    args = lambda: (pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),)  # noqa: E731
    _check_patched_matches(module, args, [x], reference_calls, expected_calls=2)


@pytest.mark.parametrize("kind", list(CELLS))
def test_every_cell_kind(kind, reference_calls):
    torch.manual_seed(83)
    torch_cls, _, extra = CELLS[kind]
    cell = torch_cls(3, 7, dtype=D, **extra)
    x, h = _leaf(4, 3), _leaf(4, 7)
    hx = (h, _leaf(4, 7)) if torch_cls is nn.LSTMCell else h
    leaves = [x, h] + ([hx[1]] if torch_cls is nn.LSTMCell else [])
    _check_patched_matches(cell, (x, hx), leaves, reference_calls, expected_calls=1)


def test_undo_restores_torch_nn_exactly():
    before = {cls: dict(vars(cls)) for cls in PATCHED}
    handle = fastrnn.patch()
    assert fastrnn.is_patched() and getattr(nn.LSTM.forward, "_fastrnn_patched", False)
    assert "cell" in vars(nn.RNNBase) and "qconfig" not in vars(nn.RNNBase)  # torch's quantization unchanged
    inner = fastrnn.patch()  # nested: counted
    inner.undo()
    inner.undo()  # idempotent
    assert fastrnn.is_patched() and getattr(nn.GRUCell.forward, "_fastrnn_patched", False)
    handle.undo()
    assert not fastrnn.is_patched()
    assert {cls: dict(vars(cls)) for cls in PATCHED} == before
    assert not hasattr(nn.LSTM, "cell") and not hasattr(nn.GRUCell, "mode")
    with fastrnn.patch() as handle:
        assert fastrnn.is_patched()
    assert not fastrnn.is_patched() and {cls: dict(vars(cls)) for cls in PATCHED} == before


def test_errors_under_patch_are_torch_nn_like():
    with fastrnn.patch():
        with pytest.raises(RuntimeError, match="input_size"):
            nn.GRU(3, 4)(torch.randn(2, 1, 5))
        with pytest.raises(RuntimeError, match="Unknown nonlinearity: bogus"):
            nn.RNNCell(3, 4, nonlinearity="bogus")(torch.randn(2, 3))


def test_subclass_attribute_named_like_a_shim_still_works():
    """patch() only adds attributes torch.nn's modules lack, and an instance's own wins."""

    class Tagged(nn.GRU):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.backend = "reference"  # e.g. a subclass picking a fastrnn backend

    with fastrnn.patch():
        gru = Tagged(3, 4)
        assert gru.backend == "reference"
        gru(torch.randn(2, 1, 3))
    with pytest.raises(ValueError, match="backend"):
        with fastrnn.patch():
            bad = Tagged(3, 4)
            bad.backend = "no-such-backend"
            bad(torch.randn(2, 1, 3))


def test_torch_compile_of_a_patched_model():
    """Unpatched, Dynamo refuses torch.nn's RNN/GRU/LSTM and runs them eagerly; patched, it traces
    fastrnn's forward (torch 2.14: the whole model below in one graph). Either way: same outputs."""
    torch.manual_seed(84)
    model = nn.Sequential(nn.GRU(3, 5, batch_first=True, dtype=D))
    x = torch.randn(2, 6, 3, dtype=D)
    expected = model(x)[0]
    torch._dynamo.reset()
    with fastrnn.patch():
        compiled = torch.compile(model, backend="eager")
        assert_close(compiled(x)[0], expected)
    torch._dynamo.reset()


def _compile_and_count(fn, *args):
    """(output of torch.compile(fn)(*args), graph breaks Dynamo counted, fastrnn layer operators
    inside the graphs it captured): a layer Dynamo refuses runs eagerly, outside every graph."""
    from torch._dynamo.utils import counters

    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    counters.clear()
    try:
        out = torch.compile(fn, backend=recording_backend)(*args)
        layers = sum("fastrnn" in str(node.target) for gm in graphs for node in gm.graph.nodes)
        return out, sum(counters["graph_break"].values()), layers
    finally:
        torch._dynamo.reset()


def _lstm_as_argument(x, lstm):  # sb3-contrib passes its LSTM to a static method like this
    return lstm(x)[0].relu()


class _BreakThenLSTM(nn.Module):
    """A model with its own graph break before the LSTM (as asteroid's): Dynamo meets the LSTM
    as a module attribute in a new frame."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, dtype=D)

    def forward(self, x):
        x = x * 2
        torch._dynamo.graph_break()
        return self.lstm(x)[0].relu()


@pytest.mark.parametrize("where", ["argument", "after_a_break"])
def test_torch_compile_of_a_patched_module_has_no_rnn_graph_break(where):
    """Issue 21 item 2: unpatched, Dynamo refuses torch.nn's LSTM wherever it meets it as an
    object ("Attempted to wrap RNN, GRU, or LSTM": a graph break, or the frame skipped) and runs it
    eagerly; patched, it compiles like fastrnn's own modules: the same graph breaks as after
    fastrnn.convert (none but the model's own), the layer inside a graph, the same numbers."""
    torch.manual_seed(86)
    x = torch.randn(5, 3, 4, dtype=D)
    if where == "argument":
        model = nn.LSTM(4, 8, dtype=D)
        compile_and_count = lambda m: _compile_and_count(_lstm_as_argument, x, m)  # noqa: E731
        expected = _lstm_as_argument(x, model)
    else:
        model = _BreakThenLSTM()
        compile_and_count = lambda m: _compile_and_count(m, x)  # noqa: E731
        expected = model(x)
    _, converted_breaks, converted_layers = compile_and_count(fastrnn.convert(copy.deepcopy(model)))
    assert converted_layers == 1
    _, unpatched_breaks, unpatched_layers = compile_and_count(model)
    assert unpatched_layers == 0  # what patch() must change: the layer ran outside any graph
    with fastrnn.patch():
        out, patched_breaks, patched_layers = compile_and_count(model)
    assert (patched_breaks, patched_layers) == (converted_breaks, converted_layers)
    assert_close(out, expected.detach())


def _node_kinds(traced):
    return [node.kind() for node in traced.inlined_graph.nodes()]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_jit_trace_of_a_patched_module_records_what_torch_nn_records(kind, auto_backend):
    """Issue 21 item 3: under auto on the CPU, jit.trace of a patched module (and of fastrnn's own)
    records torch's aten::lstm / aten::gru (cells: what aten::lstm_cell ... decomposes to), node for node as unpatched,
    bit-identical to eager, at another length too (GluonTS's test_jit_trace compares exactly)."""
    torch.manual_seed(87)
    cell = kind.endswith("Cell")
    module = getattr(nn, kind)(4, 6) if cell else getattr(nn, kind)(4, 6, num_layers=2)
    x = torch.randn(3, 4) if cell else torch.randn(7, 3, 4)
    unpatched = torch.jit.trace(module, (x,))
    with fastrnn.patch():
        patched = torch.jit.trace(module, (x,))
    fast = fastrnn.convert(copy.deepcopy(module))
    own = torch.jit.trace(fast, (x,))
    assert _node_kinds(patched) == _node_kinds(unpatched)
    assert _node_kinds(own) == _node_kinds(unpatched)
    if not cell:  # (a cell's aten op is composite: the trace holds its parts, as torch.nn's)
        assert f"aten::{kind.lower()}" in _node_kinds(patched)
    other = torch.randn(5, 4) if cell else torch.randn(11, 3, 4)
    for inputs in ((x,), (other,)):
        expected = flat(module(*inputs))
        for traced in (patched, own):
            got = flat(traced(*inputs))
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                assert torch.equal(a, b)


def test_patch_restores_dynamo_allow_rnn():
    import torch._dynamo

    config = torch._dynamo.config
    before = config.allow_rnn
    try:
        for initial in (False, True):
            config.allow_rnn = initial
            outer = fastrnn.patch()
            assert config.allow_rnn is True
            with fastrnn.patch():  # nested: restored only by the last undo
                assert config.allow_rnn is True
            assert config.allow_rnn is True
            outer.undo()
            assert config.allow_rnn is initial
    finally:
        config.allow_rnn = before


def test_parametrized_module_and_hooks_under_patch(reference_calls):
    """Parametrizations (read by name in fastrnn's forward) and module hooks behave as unpatched."""
    from torch.nn.utils.parametrizations import orthogonal

    torch.manual_seed(85)
    lstm = nn.LSTM(4, 4, dtype=D)
    orthogonal(lstm, "weight_hh_l0")
    seen = []
    lstm.register_forward_hook(lambda module, args, out: seen.append(out[0].shape))
    x = _leaf(3, 2, 4)
    _check_patched_matches(lstm, (x,), [x], reference_calls, expected_calls=1)
    assert seen == [torch.Size([3, 2, 4])] * 2
    with fastrnn.patch():  # and fastrnn's explain_backend works on torch.nn modules meanwhile
        choice = lstm.explain_backend(x)
    assert choice.backend in fastrnn.registered_backends()
