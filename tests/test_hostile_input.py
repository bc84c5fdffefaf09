"""Issue 18: what an attacker can hand fastrnn (crafted checkpoints, direct operator calls,
threads) ends in a clear error or a right answer. Each test here failed before the fix; the ones
that crashed the process then run their attack in a child process, so a crash fails the test.
The fuzzer of the same attacks is tests/test_fuzz_hostile.py."""

import io
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from fastrnn.modules.state_checks import StateError

D = torch.float64
REPO = Path(__file__).resolve().parent.parent


def run_isolated(code: str) -> str:
    """Run ``code`` in a fresh interpreter on backend auto; -> its stdout. A crash fails here."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, f"exit {proc.returncode} (negative: killed by that signal)\n{proc.stderr[-3000:]}"
    return proc.stdout


# ------------------------------------------------------------------------------ 1. module state


def test_checkpoint_whose_sizes_contradict_its_weights_is_refused_at_load():
    """torch.load(weights_only=True) of an LSTM saved with hidden_size changed: refused, naming the
    parameter and both shapes (it loaded, then the first forward on auto read past the weights)."""
    out = run_isolated("""
        import io, torch, fastrnn
        for hidden in (1000, 8):
            m = fastrnn.LSTM(4, 6)
            m.hidden_size = hidden
            buf = io.BytesIO(); torch.save(m, buf); buf.seek(0)
            try:
                torch.load(buf)
                print("loaded")
            except Exception as e:
                print(type(e).__name__, e)
    """)
    lines = out.strip().splitlines()
    assert len(lines) == 2 and "loaded" not in out, out
    assert "weight_ih_l0" in lines[0] and "(4000, 4)" in lines[0] and "(24, 4)" in lines[0]
    assert "(32, 4)" in lines[1]


def test_attributes_changed_after_construction_raise_before_torchs_kernel(auto_backend):
    out = run_isolated("""
        import torch, fastrnn
        m = fastrnn.GRU(4, 6, num_layers=2)
        m.hidden_size = 1000
        try:
            m(torch.randn(5, 3, 4))
            print("ran")
        except Exception as e:
            print(type(e).__name__, e)
    """)
    assert out.startswith("StateError") and "hidden_size=1000" in out and "(3000, 4)" in out, out


@pytest.mark.parametrize("attack", ["num_layers", "names", "nonlinearity", "dtype", "dropout"])
def test_crafted_module_states_are_refused(attack):
    m = fastrnn.RNN(3, 4, num_layers=2, nonlinearity="relu", dtype=D)
    if attack == "num_layers":
        m.num_layers = 10 ** 12  # the check compares counts before it builds anything from this
    elif attack == "names":
        m._all_weights[1][0], m._all_weights[1][1] = m._all_weights[1][1], m._all_weights[1][0]
    elif attack == "nonlinearity":
        m.mode = "RNN_TANH"  # says relu
    elif attack == "dtype":
        m.weight_hh_l1 = nn.Parameter(m.weight_hh_l1.detach().float())
    else:
        m.dropout = 7.0
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    start = time.perf_counter()
    with pytest.raises((StateError, pickle.UnpicklingError)) as e:
        torch.load(buf)
    assert time.perf_counter() - start < 5
    assert {"num_layers": "_all_weights", "names": "_all_weights", "nonlinearity": "nonlinearity",
            "dtype": "float32", "dropout": "dropout"}[attack] in str(e.value)


def test_cell_state_with_wrong_weight_is_refused():
    cell = fastrnn.LSTMCell(3, 4)
    cell.weight_hh = nn.Parameter(torch.randn(16, 5))
    buf = io.BytesIO()
    torch.save(cell, buf)
    buf.seek(0)
    with pytest.raises(StateError, match=r"weight_hh must have shape \(16, 4\).*\(16, 5\)"):
        torch.load(buf)


# ------------------------------------------------------------------------------ 2. the operator


def _op_args(T=3, B=2, I=4, H=5):
    torch.manual_seed(3)
    return dict(x=torch.randn(T, B, I), h0=torch.zeros(B, H), c0=torch.zeros(B, H), w_ih=torch.randn(4 * H, I),
                w_hh=torch.randn(4 * H, H), b_ih=torch.randn(4 * H), b_hh=torch.randn(4 * H), w_hr=None,
                lengths=None)


def _call_op(args, cell="lstm", reverse=False, backend="auto"):
    return torch.ops.fastrnn.rnn_layer(cell, *args.values(), reverse, backend)


def test_operator_refuses_a_state_of_another_batch_without_crashing():
    """float32, input batch one larger than the state's: a heap corruption abort before."""
    out = run_isolated("""
        import torch, fastrnn
        x, h0 = torch.randn(3, 3, 4), torch.zeros(2, 5)
        try:
            torch.ops.fastrnn.rnn_layer("lstm", x, h0, h0, torch.randn(20, 4), torch.randn(20, 5), None, None,
                                        None, None, False, "auto")
            print("ran")
        except Exception as e:
            print(type(e).__name__, e)
    """)
    assert out.startswith("RuntimeError") and "h0 must have shape (3, 5), got (2, 5)" in out, out


@pytest.mark.parametrize("backend", ["auto", "reference", "torch"])
def test_operator_refuses_meta_mixed_with_real_tensors(backend):
    args = _op_args()
    args["h0"] = args["h0"].to("meta")
    with pytest.raises(RuntimeError, match="h0 is on device meta but x is on cpu"):
        _call_op(args, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "reference", "torch"])
def test_operator_refuses_one_bias_without_the_other(backend):
    """On auto the torch backend dropped b_hh when b_ih was None: a wrong answer, silently."""
    args = _op_args()
    args["b_ih"] = None
    with pytest.raises(ValueError, match=r"bias_ih is None; expected a tensor of shape \(20,\)"):
        _call_op(args, backend=backend)


BAD_OPERATOR_ARGUMENTS = {
    "cell": ("cell", "bogus", ValueError, "unknown cell 'bogus'"),
    "backend": ("backend", "fastest", ValueError, "backend must be one of"),
    "lengths_over_T": ("lengths", torch.tensor([4, 1]), ValueError, r"lengths must lie in 0\.\.3 .* from 1 to 4"),
    "lengths_negative": ("lengths", torch.tensor([-1, 1]), ValueError, r"lengths must lie in 0\.\.3 .* from -1 to 1"),
    "lengths_float": ("lengths", torch.tensor([1.0, 1.0]), ValueError, "lengths must be an integer tensor"),
    "w_ih_dtype": ("w_ih", torch.randn(20, 4, dtype=D), RuntimeError, "weight_ih has dtype torch.float64 but x has"),
    "w_hh_rows": ("w_hh", torch.randn(19, 5), ValueError, r"weight_hh must have 4 \* hidden_size rows"),
    "w_hh_1d": ("w_hh", torch.randn(20), RuntimeError, "weight_hh must be 2-D"),
    "x_int": ("x", torch.ones(3, 2, 4, dtype=torch.int64), TypeError, "x must be a floating-point tensor"),
}


@pytest.mark.parametrize("name", list(BAD_OPERATOR_ARGUMENTS))
def test_operator_refuses_bad_arguments(name):
    key, value, error, message = BAD_OPERATOR_ARGUMENTS[name]
    args, cell, backend = _op_args(), "lstm", "auto"
    if key == "cell":
        cell = value
    elif key == "backend":
        backend = value
    else:
        args[key] = value
    with pytest.raises(error, match=message):
        _call_op(args, cell=cell, backend=backend)


def test_operator_with_valid_arguments_matches_the_reference():
    args = _op_args()
    args["lengths"] = torch.tensor([3, 1])
    args64 = {k: None if v is None else (v.double() if v.is_floating_point() else v) for k, v in args.items()}
    want = fastrnn.functional.rnn_layer(fastrnn.cells.LSTM, *list(args64.values())[:-1], lengths=args64["lengths"],
                                        backend="reference")
    for got, ref in zip(_call_op(args, backend="torch"), want):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ 3. loading constructs nothing


class _CallsTheConstructor:
    def __init__(self, args):
        self.args = args

    def __reduce__(self):
        return (fastrnn.LSTM, self.args)


@pytest.mark.parametrize("args", [(2000, 2000, 4), ()], ids=["huge", "no_arguments"])
def test_checkpoint_cannot_call_the_constructor(args):
    """(2000, 2000, 4): ~130 M parameters initialised from the RNG, from a file of ~1 KB."""
    buf = io.BytesIO()
    torch.save(_CallsTheConstructor(args), buf)
    assert len(buf.getvalue()) < 4000
    buf.seek(0)
    rng = torch.get_rng_state()
    start = time.perf_counter()
    with pytest.raises(pickle.UnpicklingError, match="may not (pass arguments to create a module|call the constructor)"):
        torch.load(buf)
    assert time.perf_counter() - start < 2
    assert torch.equal(rng, torch.get_rng_state())


def test_loading_a_whole_module_draws_nothing_from_the_rng_and_checks_it():
    model = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=D)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    rng = torch.get_rng_state()
    loaded = torch.load(buf)
    assert torch.equal(rng, torch.get_rng_state())
    assert type(loaded) is fastrnn.LSTM
    x = torch.randn(4, 2, 3, dtype=D)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------ 4. patch() and threads


def test_forward_started_patched_finishes_when_another_thread_undoes(monkeypatch):
    """The patched forward is stopped after its first helper call; the main thread undoes patch();
    the forward then needs more helpers (_time_major_input, _initial_state, ...): before the fix
    an AttributeError ('LSTM' object has no attribute ...)."""
    torch.manual_seed(4)
    lstm = nn.LSTM(3, 4, dtype=D)
    x = torch.randn(5, 2, 3, dtype=D)
    want = lstm(x)
    started, undone = threading.Event(), threading.Event()
    explain = fastrnn.backends.explain

    def paused_explain(*args, **kwargs):
        if threading.current_thread().name == "patched-forward":
            started.set()
            assert undone.wait(30)
        return explain(*args, **kwargs)

    monkeypatch.setattr(fastrnn.backends, "explain", paused_explain)
    fastrnn.backends.forget_decisions()  # a remembered decision would not ask explain (choose_by_key)
    result = {}

    def run():
        try:
            result["out"] = lstm(x)
        except Exception as e:  # reported to the main thread, which fails the test with it
            result["error"] = e

    handle = fastrnn.patch()
    worker = threading.Thread(target=run, name="patched-forward")
    worker.start()
    assert started.wait(30)
    handle.undo()
    undone.set()
    worker.join(30)
    assert "error" not in result, result.get("error")
    torch.testing.assert_close(result["out"], want)
    assert not fastrnn.is_patched()
    assert not hasattr(nn.LSTM, "_time_major_input")  # removed once that forward was done
    assert "forward" not in vars(nn.RNNBase) or not getattr(nn.LSTM.forward, "_fastrnn_patched", False)


def test_forwards_under_patch_toggled_by_another_thread_are_right():
    torch.manual_seed(5)
    lstm = nn.LSTM(3, 4, dtype=D)
    x = torch.randn(4, 2, 3, dtype=D)
    want = lstm(x)[0]
    stop, errors, calls = threading.Event(), [], [0]

    def forwards():
        while not stop.is_set():
            try:
                out = lstm(x)[0]
                if not torch.allclose(out, want, rtol=1e-10, atol=1e-12):
                    errors.append("wrong output")
            except Exception as e:  # collected; the test fails on any
                errors.append(repr(e))
            calls[0] += 1

    workers = [threading.Thread(target=forwards) for _ in range(2)]
    for w in workers:
        w.start()
    deadline = time.perf_counter() + 1.5
    while time.perf_counter() < deadline:
        with fastrnn.patch():
            time.sleep(0)
    stop.set()
    for w in workers:
        w.join(30)
    assert not errors, errors[:3]
    assert calls[0] > 0 and not fastrnn.is_patched() and not hasattr(nn.LSTM, "_time_major_input")


# ------------------------------------------------------------------------------ 5. convert


def test_convert_replaces_a_module_under_every_name():
    model = nn.Module()
    model.a = model.b = nn.LSTM(3, 4)
    fastrnn.convert(model)
    assert type(model.a) is fastrnn.LSTM and model.a is model.b
    fastrnn.convert(model, to="torch")
    assert type(model.b) is nn.LSTM and model.a is model.b


@pytest.mark.parametrize("to", ["fastrnn", "torch"])
@pytest.mark.parametrize("full", [True, False], ids=["full", "legacy"])
def test_convert_keeps_backward_hooks(to, full):
    torch.manual_seed(6)
    src = nn.GRU(3, 4, dtype=D) if to == "fastrnn" else fastrnn.GRU(3, 4, dtype=D)
    calls = []
    register = src.register_full_backward_hook if full else src.register_backward_hook
    register(lambda module, grad_in, grad_out: calls.append(len(grad_out)))
    dst = fastrnn.convert(src, to=to)
    assert dst._is_full_backward_hook is full
    x = torch.randn(2, 1, 3, dtype=D, requires_grad=True)
    with pytest.warns(FutureWarning) if not full else _nothing():
        dst(x)[0].sum().backward()
    assert len(calls) == 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------ 6. functional lengths, export


@pytest.mark.parametrize("backend", ["auto", "reference", "torch"])
@pytest.mark.parametrize("lengths", [[-1, 2], [2, 4]], ids=["negative", "over_T"])
def test_functional_lengths_out_of_range_raise_on_every_backend(backend, lengths):
    x = torch.randn(3, 2, 4, dtype=D)
    w_ih, w_hh = torch.randn(15, 4, dtype=D), torch.randn(15, 5, dtype=D)
    with pytest.raises(ValueError, match=r"lengths must lie in 0\.\.3 .* from -?\d to \d"):
        fastrnn.functional.gru_layer(x, None, w_ih, w_hh, lengths=torch.tensor(lengths), backend=backend)


def test_exported_sorted_packed_sequence_with_given_state_runs_at_batch_1():
    torch.manual_seed(7)
    lstm = fastrnn.LSTM(3, 5, dtype=D)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, data, batch_sizes, h, c):
            out, (h_n, c_n) = self.lstm(PackedSequence(data, batch_sizes), (h, c))
            return out.data, h_n, c_n

    def inputs(lengths):
        x = torch.randn(len(lengths), max(lengths), 3, dtype=D)
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True)  # sorted: no sorted_indices
        h, c = (torch.randn(1, len(lengths), 5, dtype=D) for _ in range(2))
        return packed.data, packed.batch_sizes, h, c

    batch = Dim("B")
    ep = torch.export.export(Model(), inputs([4, 3, 1]),
                             dynamic_shapes=({0: Dim("N")}, {0: Dim("T")}, {1: batch}, {1: batch}))
    for lengths in ([5, 2, 2, 1], [3]):
        args = inputs(lengths)
        for got, want in zip(ep.module()(*args), Model()(*args)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    data, batch_sizes, h, c = inputs([3, 2])
    with pytest.raises(RuntimeError):  # a state of another batch than the sequence's
        ep.module()(data, batch_sizes, h[:, :1], c[:, :1])
