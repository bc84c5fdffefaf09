"""The backend registry and selection rules (fastrnn/backends.py)."""

import pytest
import torch

import fastrnn
from fastrnn import backends
from fastrnn.backends import Backend, BackendError
from fastrnn.reference import reference_layer

D = torch.float64


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No test here may see a FASTRNN_BACKEND set outside the test."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)


class Recorder:
    """run_layer that records its calls and runs the reference implementation."""

    def __init__(self):
        self.calls = []

    def __call__(self, cell, x, *args):
        self.calls.append((cell.name, tuple(x.shape)))
        return reference_layer(cell, x, *args)


@pytest.fixture
def register():
    """register(name, **Backend fields) -> Recorder; removes every fake backend afterwards."""
    added = []

    def _register(name, priority=-10, auto=False, unsupported=None, unavailable=None):
        assert name not in backends._REGISTRY
        recorder = Recorder()
        fields = dict(name=name, priority=priority, run_layer=recorder, auto=auto)
        if unsupported is not None:
            fields["unsupported"] = unsupported
        if unavailable is not None:
            fields["unavailable"] = unavailable
        backends.register_backend(Backend(**fields))
        added.append(name)
        return recorder

    before = dict(backends._REGISTRY)
    yield _register
    for name in added:
        backends._REGISTRY.pop(name, None)
    assert backends._REGISTRY == before


def _x(batch=2):
    return torch.randn(4, batch, 3, dtype=D)


def test_reference_is_registered():
    assert "reference" in fastrnn.registered_backends()
    assert "reference" in backends._REGISTRY


# On the CPU, auto runs torch's own kernels (tests/test_torch_backend.py has the rest of the rule).
AUTO_CPU = "torch"


def test_explain_backend_reports_torch_under_auto():
    lstm = fastrnn.LSTM(3, 5, dtype=D)
    choice = lstm.explain_backend(_x())
    assert choice.backend == AUTO_CPU
    assert choice.requested == "auto"
    assert choice.requested_by == "default"
    assert f"'{AUTO_CPU}'" in str(choice)


def test_explain_backend_with_packed_input():
    gru = fastrnn.GRU(3, 5, dtype=D)
    packed = torch.nn.utils.rnn.pack_padded_sequence(_x(3), torch.tensor([4, 1, 2]), enforce_sorted=False)
    assert gru.explain_backend(packed).backend == AUTO_CPU


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN, fastrnn.LSTMCell, fastrnn.GRUCell, fastrnn.RNNCell])
def test_unknown_backend_argument_lists_choices(cls):
    with pytest.raises(ValueError) as error:
        cls(3, 5, backend="nope")
    message = str(error.value)
    assert "'nope'" in message
    assert "'auto'" in message and "'reference'" in message


def test_unknown_backend_in_functional_call():
    x = _x()
    with pytest.raises(ValueError, match="must be one of 'auto'.*got 'nope'"):
        fastrnn.functional.gru_layer(x, None, torch.randn(15, 3, dtype=D), torch.randn(15, 5, dtype=D), backend="nope")


def test_use_backend_rejects_unknown_name():
    with pytest.raises(ValueError) as error:
        with fastrnn.use_backend("nope"):
            pass
    message = str(error.value)
    assert "use_backend" in message and "'nope'" in message
    assert all(repr(name) in message for name in ["auto"] + fastrnn.registered_backends())


def test_env_var_unknown_value_raises(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "nope")
    lstm = fastrnn.LSTM(3, 5, dtype=D)
    with pytest.raises(ValueError) as error:
        lstm(_x())
    message = str(error.value)
    assert backends.ENV_VAR in message and "'nope'" in message and "'reference'" in message


def test_env_var_auto_and_blank_mean_auto(monkeypatch, register):
    rec = register("fake_env_auto", auto=False)
    for value in ("auto", "", "  "):
        monkeypatch.setenv(backends.ENV_VAR, value)
        fastrnn.GRU(3, 5, dtype=D)(_x())
    assert rec.calls == []


def test_env_var_selects_backend(monkeypatch, register):
    rec = register("fake_env")
    monkeypatch.setenv(backends.ENV_VAR, "fake_env")
    gru = fastrnn.GRU(3, 5, num_layers=2, bidirectional=True, dtype=D)
    choice = gru.explain_backend(_x())
    assert choice.backend == "fake_env" and choice.requested_by == backends.ENV_VAR
    gru(_x())
    assert len(rec.calls) == 4  # 2 layers x 2 directions
    monkeypatch.setenv(backends.ENV_VAR, " fake_env ")  # surrounding blanks are ignored
    gru(_x())
    assert len(rec.calls) == 8


def test_use_backend_nests_and_restores(register):
    outer, inner = register("fake_outer"), register("fake_inner")
    lstm = fastrnn.LSTM(3, 5, dtype=D)
    with fastrnn.use_backend("fake_outer"):
        lstm(_x())
        assert (len(outer.calls), len(inner.calls)) == (1, 0)
        with fastrnn.use_backend("fake_inner"):
            lstm(_x())
            assert (len(outer.calls), len(inner.calls)) == (1, 1)
            with fastrnn.use_backend("auto"):  # "auto" defers to the next rule, not the outer block
                assert lstm.explain_backend(_x()).backend == AUTO_CPU
            assert lstm.explain_backend(_x()).backend == "fake_inner"
        lstm(_x())
        assert (len(outer.calls), len(inner.calls)) == (2, 1)
    lstm(_x())
    assert (len(outer.calls), len(inner.calls)) == (2, 1)
    assert lstm.explain_backend(_x()).backend == AUTO_CPU


def test_use_backend_restores_after_exception(register):
    rec = register("fake_exc")
    with pytest.raises(KeyError):
        with fastrnn.use_backend("fake_exc"):
            raise KeyError("boom")
    fastrnn.RNN(3, 5, dtype=D)(_x())
    assert rec.calls == []


def test_precedence_argument_over_context_over_env(monkeypatch, register):
    env, ctx, arg = register("fake_env"), register("fake_ctx"), register("fake_arg")
    monkeypatch.setenv(backends.ENV_VAR, "fake_env")
    x = _x()
    plain, named = fastrnn.GRU(3, 5, dtype=D), fastrnn.GRU(3, 5, dtype=D, backend="fake_arg")

    plain(x)
    assert (len(env.calls), len(ctx.calls), len(arg.calls)) == (1, 0, 0)
    with fastrnn.use_backend("fake_ctx"):
        plain(x)
        assert (len(env.calls), len(ctx.calls), len(arg.calls)) == (1, 1, 0)
        assert plain.explain_backend(x).requested_by == "fastrnn.use_backend()"
        named(x)
        assert (len(env.calls), len(ctx.calls), len(arg.calls)) == (1, 1, 1)
        assert named.explain_backend(x).requested_by == "the backend= argument"
    named(x)
    assert (len(env.calls), len(ctx.calls), len(arg.calls)) == (1, 1, 2)


def test_module_backend_argument_for_cells(register):
    rec = register("fake_cell")
    cell = fastrnn.LSTMCell(3, 5, dtype=D, backend="fake_cell")
    h, c = cell(torch.randn(2, 3, dtype=D))
    assert rec.calls == [("lstm", (1, 2, 3))]
    assert h.shape == c.shape == (2, 5)


def _no_gru(problem):
    return "GRU is not implemented by this fake" if problem.cell.name == "gru" else None


def test_auto_skips_unsupported_backend_and_reports_why(register):
    rec = register("fake_nogru", priority=100, auto=True, unsupported=_no_gru)
    gru = fastrnn.GRU(3, 5, dtype=D)
    choice = gru.explain_backend(_x())
    assert choice.backend == AUTO_CPU
    assert choice.skipped["fake_nogru"] == "GRU is not implemented by this fake"
    assert "fake_nogru" in str(choice) and "GRU is not implemented" in str(choice)
    gru(_x())
    assert rec.calls == []


def test_auto_skips_unverified_backend(register):
    rec = register("fake_unverified", priority=100, auto=False)
    choice = fastrnn.LSTM(3, 5, dtype=D).explain_backend(_x())
    assert choice.backend == AUTO_CPU
    assert "only run when named" in choice.skipped["fake_unverified"]
    fastrnn.LSTM(3, 5, dtype=D)(_x())
    assert rec.calls == []


def test_auto_skips_unavailable_backend(register):
    register("fake_absent", priority=100, auto=True, unavailable=lambda: "no such hardware here")
    choice = fastrnn.RNN(3, 5, dtype=D).explain_backend(_x())
    assert choice.backend == AUTO_CPU
    assert choice.skipped["fake_absent"] == "no such hardware here"


@pytest.mark.parametrize("how", ["argument", "context", "env"])
def test_explicit_unsupported_backend_raises_and_never_substitutes(how, register, monkeypatch):
    rec = register("fake_nogru", priority=100, auto=True, unsupported=_no_gru)
    gru = fastrnn.GRU(3, 5, dtype=D, backend="fake_nogru" if how == "argument" else "auto")
    ran_reference = []
    monkeypatch.setattr(backends._REGISTRY["reference"], "run_layer",
                        lambda *a: ran_reference.append(1) or reference_layer(*a))
    if how == "env":
        monkeypatch.setenv(backends.ENV_VAR, "fake_nogru")
    with pytest.raises(BackendError) as error:
        if how == "context":
            with fastrnn.use_backend("fake_nogru"):
                gru(_x())
        else:
            gru(_x())
    message = str(error.value)
    assert "'fake_nogru'" in message and "GRU is not implemented by this fake" in message
    assert isinstance(error.value, RuntimeError)  # BackendError is a RuntimeError
    assert rec.calls == [] and ran_reference == []
    # The same backend runs what it supports.
    lstm = fastrnn.LSTM(3, 5, dtype=D, backend="fake_nogru")
    lstm(_x())
    assert rec.calls == [("lstm", (4, 2, 3))]


def test_explicit_unavailable_backend_raises(register):
    register("fake_absent", unavailable=lambda: "needs a GPU")
    rnn = fastrnn.RNN(3, 5, dtype=D, backend="fake_absent")
    with pytest.raises(BackendError, match="'fake_absent'.*needs a GPU"):
        rnn(_x())
    with pytest.raises(BackendError, match="needs a GPU"):
        rnn.explain_backend(_x())


def test_auto_picks_higher_priority_backend_that_supports_the_problem(register):
    low = register("fake_low", priority=5, auto=True)
    high = register("fake_high", priority=50, auto=True)
    assert fastrnn.registered_backends().index("fake_high") < fastrnn.registered_backends().index("fake_low")
    lstm = fastrnn.LSTM(3, 5, num_layers=2, dtype=D)
    choice = lstm.explain_backend(_x())
    assert choice.backend == "fake_high" and choice.requested == "auto"
    assert "fake_low" not in choice.skipped
    torch.manual_seed(0)
    x = _x()
    out, _ = lstm(x)
    assert len(high.calls) == 2 and low.calls == []
    with fastrnn.use_backend("reference"):
        out_ref, _ = lstm(x)
    assert len(high.calls) == 2
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)


def test_problem_description_passed_to_backend(register):
    seen = []

    def unsupported(problem):
        seen.append(problem)
        return "recorded"

    register("fake_probe", priority=100, auto=True, unsupported=unsupported)
    lstm = fastrnn.LSTM(3, 6, proj_size=2, bias=False, dtype=D)
    packed = torch.nn.utils.rnn.pack_padded_sequence(_x(3), torch.tensor([4, 1, 2]), enforce_sorted=False)
    lstm(packed)
    (p,) = seen
    assert (p.cell.name, p.dtype, p.input_size, p.hidden_size, p.proj_size) == ("lstm", D, 3, 6, 2)
    assert (p.batch_size, p.seq_len, p.has_bias, p.has_lengths) == (3, 4, False, True)
    assert p.device == torch.device("cpu")
