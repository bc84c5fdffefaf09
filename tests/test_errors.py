"""Errors: fastrnn raises the exception type torch.nn raises, with a message that says what was
expected and what was given. Where torch.nn's error is obscure (an internal matmul error) or
missing, fastrnn must still raise a clear error; those cases are tested on fastrnn alone.
"""

import warnings

import pytest
import torch
from torch import nn

import fastrnn

D = torch.float64


def _x(*shape, **kw):
    return torch.randn(*shape, dtype=kw.pop("dtype", D), **kw)


def _mod(lib, cls, *args, **kw):
    return getattr(lib, cls)(*args, dtype=D, **kw)


# (id, thunk factory taking the library (torch.nn or fastrnn), substrings of fastrnn's message)
CONSTRUCTOR_CASES = [
    ("gru_proj_size", lambda lib: lib.GRU(5, 4, proj_size=2), ["proj_size", "LSTM"]),
    ("rnn_proj_size", lambda lib: lib.RNN(5, 4, proj_size=2), ["proj_size", "LSTM"]),
    ("gru_proj_size_zero", lambda lib: lib.GRU(5, 4, proj_size=0), ["proj_size", "LSTM"]),
    ("proj_eq_hidden", lambda lib: lib.LSTM(5, 4, proj_size=4), ["smaller than hidden_size", "proj_size=4", "hidden_size=4"]),
    ("proj_gt_hidden", lambda lib: lib.LSTM(5, 4, proj_size=7), ["smaller than hidden_size", "proj_size=7"]),
    ("proj_negative", lambda lib: lib.LSTM(5, 4, proj_size=-1), ["proj_size", "positive integer or zero", "-1"]),
    ("input_size_zero", lambda lib: lib.LSTM(0, 4), ["input_size", "greater than zero", "got 0"]),
    ("input_size_negative", lambda lib: lib.GRU(-2, 4), ["input_size", "greater than zero", "-2"]),
    ("hidden_size_zero", lambda lib: lib.RNN(5, 0), ["hidden_size", "greater than zero", "got 0"]),
    ("hidden_size_negative", lambda lib: lib.LSTM(5, -3), ["hidden_size", "greater than zero", "-3"]),
    ("num_layers_zero", lambda lib: lib.LSTM(5, 4, num_layers=0), ["num_layers", "greater than zero", "got 0"]),
    ("num_layers_negative", lambda lib: lib.RNN(5, 4, num_layers=-1), ["num_layers", "greater than zero", "-1"]),
    ("input_size_float", lambda lib: lib.LSTM(5.0, 4), ["input_size", "int", "float"]),
    ("hidden_size_float", lambda lib: lib.GRU(5, 4.0), ["hidden_size", "int", "float"]),
    ("hidden_size_str", lambda lib: lib.RNN(5, "4"), ["hidden_size", "int", "str"]),
    ("num_layers_float", lambda lib: lib.LSTM(5, 4, num_layers=2.0), ["num_layers", "int", "float"]),
    ("proj_size_float", lambda lib: lib.LSTM(5, 4, proj_size=2.0), ["proj_size", "int", "float"]),
    ("dropout_negative", lambda lib: lib.LSTM(5, 4, num_layers=2, dropout=-0.1), ["dropout", "[0, 1]", "-0.1"]),
    ("dropout_above_one", lambda lib: lib.GRU(5, 4, num_layers=2, dropout=1.5), ["dropout", "[0, 1]", "1.5"]),
    ("dropout_bool", lambda lib: lib.LSTM(5, 4, num_layers=2, dropout=True), ["dropout", "[0, 1]", "True"]),
    ("dropout_str", lambda lib: lib.RNN(5, 4, num_layers=2, dropout="0.1"), ["dropout", "[0, 1]", "'0.1'"]),
    ("bias_int", lambda lib: lib.LSTM(5, 4, bias=1), ["bias", "bool", "int"]),
    ("bias_str", lambda lib: lib.GRU(5, 4, bias="yes"), ["bias", "bool", "str"]),
    ("batch_first_int", lambda lib: lib.RNN(5, 4, batch_first=0), ["batch_first", "bool", "int"]),
    ("nonlinearity_kw", lambda lib: lib.RNN(5, 4, nonlinearity="sigmoid"), ["sigmoid", "tanh", "relu"]),
    ("nonlinearity_positional", lambda lib: lib.RNN(5, 4, 1, "gelu"), ["gelu", "tanh", "relu"]),
    ("cell_input_size_float", lambda lib: lib.LSTMCell(5.0, 4), ["input_size", "int", "float"]),
    ("cell_hidden_size_float", lambda lib: lib.GRUCell(5, 4.5), ["hidden_size", "int", "float"]),
]


def _module_forward_cases():
    cases = []
    for cls, kw in (("RNN", {}), ("LSTM", {}), ("GRU", {}), ("LSTM", {"proj_size": 2})):
        lstm = cls == "LSTM"
        h_out = kw.get("proj_size", 4)
        tag = cls + ("_proj" if kw else "")

        def hx(h, c=None, lstm=lstm):
            if not lstm:
                return h
            return (h, c if c is not None else torch.zeros(h.shape[:-1] + (4,), dtype=h.dtype, device=h.device))

        def case(name, call, subs, cls=cls, kw=kw):
            cases.append((f"{tag}-{name}", lambda lib: (lambda: call(_mod(lib, cls, 5, 4, **kw))), subs))

        case("input_size", lambda m: m(_x(7, 3, 6)), ["input_size", "Expected 5", "got 6"])
        case("input_size_unbatched", lambda m: m(_x(7, 6)), ["input_size", "Expected 5", "got 6"])
        case("input_1d", lambda m: m(_x(5)), ["2D or 3D", "1D"])
        case("input_4d", lambda m: m(_x(2, 7, 3, 5)), ["2D or 3D", "4D"])
        case("hx_feature_size", lambda m, hx=hx, h=h_out: m(_x(7, 3, 5), hx(torch.zeros(1, 3, h + 1, dtype=D))),
             [f"(1, 3, {h_out})", f"[1, 3, {h_out + 1}]"])
        case("hx_layers", lambda m, hx=hx, h=h_out: m(_x(7, 3, 5), hx(torch.zeros(2, 3, h, dtype=D))),
             [f"(1, 3, {h_out})", f"[2, 3, {h_out}]"])
        case("hx_batch", lambda m, hx=hx, h=h_out: m(_x(7, 3, 5), hx(torch.zeros(1, 2, h, dtype=D))),
             [f"(1, 3, {h_out})", f"[1, 2, {h_out}]"])
        cases.append((
            f"{tag}-hx_batch_batch_first",
            lambda lib, cls=cls, kw=kw, hx=hx, h=h_out: (
                lambda: _mod(lib, cls, 5, 4, batch_first=True, **kw)(_x(3, 7, 5), hx(torch.zeros(1, 7, h, dtype=D)))
            ),
            [f"(1, 3, {h_out})", f"[1, 7, {h_out}]"],
        ))
        case("hx_2d_for_batched", lambda m, hx=hx, h=h_out: m(_x(7, 3, 5), hx(torch.zeros(3, h, dtype=D), torch.zeros(3, 4, dtype=D))),
             ["batched 3-D", "3-D", "2-D"])
        case("hx_3d_for_unbatched", lambda m, hx=hx, h=h_out: m(_x(7, 5), hx(torch.zeros(1, 1, h, dtype=D), torch.zeros(1, 1, 4, dtype=D))),
             ["unbatched 2-D", "2-D", "3-D"])
        case("input_dtype", lambda m: m(_x(7, 3, 5, dtype=torch.float32)), ["torch.float32", "torch.float64"])
        if lstm:
            case("cx_size", lambda m, h=h_out: m(_x(7, 3, 5), (torch.zeros(1, 3, h, dtype=D), torch.zeros(1, 3, 5, dtype=D))),
                 ["hidden[1]", "(1, 3, 4)", "[1, 3, 5]"])
            case("cx_batch", lambda m, h=h_out: m(_x(7, 3, 5), (torch.zeros(1, 3, h, dtype=D), torch.zeros(1, 2, 4, dtype=D))),
                 ["hidden[1]", "(1, 3, 4)", "[1, 2, 4]"])
    return cases


def _cell_forward_cases():
    cases = []
    for cls in ("RNNCell", "LSTMCell", "GRUCell"):
        lstm = cls == "LSTMCell"

        def hx(h, c=None, lstm=lstm):
            if not lstm:
                return h
            return (h, c if c is not None else torch.zeros(h.shape, dtype=h.dtype))

        def case(name, call, subs, cls=cls):
            cases.append((f"{cls}-{name}", lambda lib: (lambda: call(_mod(lib, cls, 5, 4))), subs))

        case("input_size", lambda m: m(_x(3, 6)), ["input_size", "got 6", "expected 5"])
        case("input_size_1d", lambda m: m(_x(6)), ["input_size", "got 6", "expected 5"])
        case("hidden_batch", lambda m, hx=hx: m(_x(3, 5), hx(torch.zeros(2, 4, dtype=D))),
             ["batch size 3", "batch size 2"])
        case("hidden_size", lambda m, hx=hx: m(_x(3, 5), hx(torch.zeros(3, 6, dtype=D))),
             ["hidden_size", "got 6", "expected 4"])
        case("input_3d", lambda m: m(_x(2, 3, 5)), ["1D or 2D", "3D"])
        case("input_0d", lambda m: m(torch.tensor(1.0, dtype=D)), ["1D or 2D", "0D"])
        case("hidden_3d", lambda m, hx=hx: m(_x(3, 5), hx(torch.zeros(1, 3, 4, dtype=D))), ["1D or 2D", "3D"])
        case("input_1d_hidden_2d", lambda m, hx=hx: m(_x(5), hx(torch.zeros(1, 4, dtype=D))), ["unbatched 1-D", "2-D"])
        if lstm:
            case("cx_size", lambda m: m(_x(3, 5), (torch.zeros(3, 4, dtype=D), torch.zeros(3, 5, dtype=D))),
                 ["hidden1", "got 5", "expected 4"])
            case("cx_batch", lambda m: m(_x(3, 5), (torch.zeros(3, 4, dtype=D), torch.zeros(2, 4, dtype=D))),
                 ["hidden1", "batch size 2"])
    return cases


def _packed_cases():
    def packed(feature):
        return nn.utils.rnn.pack_padded_sequence(_x(6, 3, feature), torch.tensor([6, 2, 4]), enforce_sorted=False)

    return [
        ("packed-input_size", lambda lib: (lambda: _mod(lib, "GRU", 5, 4)(packed(6))), ["input_size", "Expected 5", "got 6"]),
        ("packed-hx_batch", lambda lib: (lambda: _mod(lib, "GRU", 5, 4)(packed(5), torch.zeros(1, 2, 4, dtype=D))),
         ["(1, 3, 4)", "[1, 2, 4]"]),
    ]


CASES = CONSTRUCTOR_CASES + _module_forward_cases() + _cell_forward_cases() + _packed_cases()


@pytest.mark.parametrize("factory,substrings", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_same_exception_type_as_torch(factory, substrings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dropout warnings of the constructor cases
        with pytest.raises(Exception) as torch_error:
            factory(nn)()
        with pytest.raises(Exception) as fast_error:
            factory(fastrnn)()
    assert type(fast_error.value) is type(torch_error.value), (
        f"torch.nn raised {type(torch_error.value).__name__}: {torch_error.value}\n"
        f"fastrnn raised {type(fast_error.value).__name__}: {fast_error.value}"
    )
    message = str(fast_error.value)
    for s in substrings:
        assert s in message, f"{s!r} not in fastrnn's message {message!r}"


# ----------------------------------------------------------- where torch.nn's error is obscure


def test_rnncell_unknown_nonlinearity_raises_at_construction():
    """Deliberate difference (fastrnn/modules/rnn_cell.py docstring): torch.nn.RNNCell accepts
    an unknown nonlinearity and raises RuntimeError at the first forward; fastrnn raises
    ValueError in the constructor, as torch.nn.RNN does."""
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'.*'tanh' or 'relu'"):
        fastrnn.RNNCell(5, 4, nonlinearity="sigmoid")
    cell = nn.RNNCell(5, 4, nonlinearity="sigmoid")  # torch.nn: no error yet ...
    with pytest.raises(RuntimeError, match="Unknown nonlinearity"):
        cell(torch.randn(2, 5))  # ... only here


HX_DTYPE = [
    ("RNN", lambda m: m(_x(7, 3, 5), torch.zeros(1, 3, 4)), ["hidden", "torch.float64", "torch.float32"]),
    ("GRU", lambda m: m(_x(7, 3, 5), torch.zeros(1, 3, 4)), ["hidden", "torch.float64", "torch.float32"]),
    ("LSTM", lambda m: m(_x(7, 3, 5), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4, dtype=D))),
     ["hidden[0]", "torch.float64", "torch.float32"]),
    ("RNNCell", lambda m: m(_x(3, 5), torch.zeros(3, 4)), ["hidden0", "torch.float32", "torch.float64"]),
    ("GRUCell", lambda m: m(_x(3, 5), torch.zeros(3, 4)), ["hidden0", "torch.float32", "torch.float64"]),
    ("RNNCell", lambda m: m(_x(3, 5, dtype=torch.float32)), ["input", "torch.float32", "torch.float64"]),
    ("LSTMCell", lambda m: m(_x(3, 5, dtype=torch.float32)), ["input", "torch.float32", "torch.float64"]),
]


@pytest.mark.parametrize("cls,call,substrings", HX_DTYPE, ids=[f"{c[0]}-{i}" for i, c in enumerate(HX_DTYPE)])
def test_dtype_mismatch_is_clear(cls, call, substrings):
    """torch.nn only fails deep inside a matmul ("mat1 and mat2 must have the same dtype");
    fastrnn raises RuntimeError (the same type) naming the tensor and both dtypes."""
    with pytest.raises(RuntimeError) as torch_error:
        call(_mod(nn, cls, 5, 4))
    with pytest.raises(RuntimeError) as fast_error:
        call(_mod(fastrnn, cls, 5, 4))
    assert type(fast_error.value) is type(torch_error.value)
    for s in substrings:
        assert s in str(fast_error.value), str(fast_error.value)



CX_DTYPE = [
    ("LSTM", lambda m: m(_x(7, 3, 5), (torch.zeros(1, 3, 4, dtype=D), torch.zeros(1, 3, 4))),
     ["hidden[1]", "torch.float64", "torch.float32"]),
    ("LSTMCell", lambda m: m(_x(3, 5), (torch.zeros(3, 4, dtype=D), torch.zeros(3, 4))),
     ["hidden1", "torch.float32", "torch.float64"]),
]


@pytest.mark.parametrize("cls,call,substrings", CX_DTYPE, ids=[c[0] for c in CX_DTYPE])
def test_cell_state_dtype_mismatch(cls, call, substrings):
    """torch.nn raises nothing for a float32 c0 with float64 input and weights (type promotion
    quietly runs it in float64); fastrnn raises RuntimeError naming c0 and both dtypes."""
    call(_mod(nn, cls, 5, 4))  # torch.nn: no error
    with pytest.raises(RuntimeError) as fast_error:
        call(_mod(fastrnn, cls, 5, 4))
    for s in substrings:
        assert s in str(fast_error.value), str(fast_error.value)


def test_packed_input_dtype_mismatch():
    """torch.nn skips its input dtype check for PackedSequence and fails inside a matmul with a
    RuntimeError ("mat1 and mat2 must have the same dtype"); fastrnn applies the same check as
    for a padded tensor: ValueError naming both dtypes."""
    packed = nn.utils.rnn.pack_padded_sequence(_x(6, 3, 5).float(), torch.tensor([6, 2, 4]), enforce_sorted=False)
    with pytest.raises(RuntimeError, match="same dtype"):
        _mod(nn, "LSTM", 5, 4)(packed)
    with pytest.raises(ValueError, match=r"input dtype \(torch.float32\) does not match weight dtype \(torch.float64\)"):
        _mod(fastrnn, "LSTM", 5, 4)(packed)

DEVICE = [
    ("LSTM", lambda m: m(_x(7, 3, 5, device="meta")), ["cpu", "meta"]),
    ("GRU", lambda m: m(_x(7, 3, 5), torch.zeros(1, 3, 4, dtype=D, device="meta")), ["hidden", "cpu", "meta"]),
    ("LSTM", lambda m: m(_x(7, 3, 5), (torch.zeros(1, 3, 4, dtype=D), torch.zeros(1, 3, 4, dtype=D, device="meta"))),
     ["hidden[1]", "cpu", "meta"]),
    ("RNN", lambda m: m(_x(7, 3, 5), torch.zeros(1, 3, 4, dtype=D, device="meta")), ["hidden", "cpu", "meta"]),
    ("GRUCell", lambda m: m(_x(3, 5, device="meta")), ["cpu", "meta"]),
    ("LSTMCell", lambda m: m(_x(3, 5), (torch.zeros(3, 4, dtype=D, device="meta"), torch.zeros(3, 4, dtype=D))),
     ["hidden0", "cpu", "meta"]),
    ("RNNCell", lambda m: m(_x(3, 5), torch.zeros(3, 4, dtype=D, device="meta")), ["hidden0", "cpu", "meta"]),
]


@pytest.mark.parametrize("cls,call,substrings", DEVICE, ids=[f"{c[0]}-{i}" for i, c in enumerate(DEVICE)])
def test_device_mismatch_is_clear(cls, call, substrings):
    """Device mismatch simulated with the 'meta' device (this machine has no GPU): torch.nn raises
    RuntimeError; so does fastrnn, naming both devices."""
    with pytest.raises(RuntimeError) as torch_error:
        call(_mod(nn, cls, 5, 4))
    with pytest.raises(RuntimeError) as fast_error:
        call(_mod(fastrnn, cls, 5, 4))
    assert type(fast_error.value) is type(torch_error.value)
    for s in substrings:
        assert s in str(fast_error.value), str(fast_error.value)


@pytest.mark.parametrize("cls,hx", [
    ("GRU", (torch.zeros(1, 3, 4, dtype=D),)),
    ("RNN", [torch.zeros(1, 3, 4, dtype=D)]),
    ("LSTM", torch.zeros(1, 3, 4, dtype=D)),
    ("LSTM", (torch.zeros(1, 3, 4, dtype=D),)),
])
def test_hx_of_wrong_kind(cls, hx):
    """torch.nn fails with an AttributeError/IndexError from deep inside; fastrnn raises TypeError
    saying what hx must be and what it got."""
    with pytest.raises(TypeError) as error:
        _mod(fastrnn, cls, 5, 4)(_x(7, 3, 5), hx)
    message = str(error.value)
    assert "hx must be" in message
    assert ("Tensor of shape" in message) or ("of length 1" in message), message


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_input_not_a_tensor(cls):
    with pytest.raises(TypeError, match="Tensor or PackedSequence, got list"):
        _mod(fastrnn, cls, 5, 4)([[0.0] * 5])
