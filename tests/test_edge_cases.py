"""Edge cases and bad input found by differential fuzzing against torch.nn (issue 13): malformed
PackedSequences, LSTMCell states of the wrong form, and the drop-in differences of cells and
modules (sizes 0, non-bool cell bias, positional bool sizes, sequences of length 0)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fastrnn
from helpers import CELLS, make_cell_pair, run_and_compare

D = torch.float64


# ----------------------------------------------------------------------------- item 4


@pytest.mark.parametrize("batch_sizes,rows,message", [
    ([2, 3], 5, "non-increasing"),  # rising, sums to the rows
    ([1, 3], 4, "non-increasing"),
    ([2, -1], 1, "positive"),
    ([3, 0], 3, "positive"),  # torch.nn accepts this one and drops the step
    ([0], 0, "positive"),
    ([2, 1], 4, "sum to 3, but data has 4 rows"),  # torch.nn accepts this one and ignores a row
    ([3, 2], 4, "sum to 5, but data has 4 rows"),
    ([], 0, "non-empty 1-D"),
    ([[2, 2]], 4, "non-empty 1-D"),
])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_malformed_batch_sizes_raise(cls, batch_sizes, rows, message):
    model = getattr(fastrnn, cls)(3, 4, dtype=D)
    packed = PackedSequence(torch.randn(rows, 3, dtype=D), torch.tensor(batch_sizes, dtype=torch.int64))
    with pytest.raises(RuntimeError, match=message):
        model(packed)


def test_rising_batch_sizes_raise_in_torch_too():
    """Where the rows do not fit the layout, torch.nn raises a RuntimeError as well (its words
    are internal: narrow, broadcast); fastrnn's says what batch_sizes must be."""
    for batch_sizes, rows in (([2, 3], 4), ([2, -1], 4), ([1, 3], 4)):
        packed = PackedSequence(torch.randn(rows, 3), torch.tensor(batch_sizes))
        with pytest.raises(RuntimeError):
            nn.LSTM(3, 4)(packed)
        with pytest.raises(RuntimeError, match="batch_sizes"):
            fastrnn.LSTM(3, 4)(packed)


def test_float_batch_sizes_and_wrong_indices():
    data = torch.randn(4, 3, dtype=D)
    with pytest.raises(TypeError, match="integer tensor, got torch.float32"):
        fastrnn.GRU(3, 4, dtype=D)(PackedSequence(data, torch.tensor([2.0, 2.0])))
    bad = PackedSequence(data, torch.tensor([2, 2]), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match=r"sorted_indices must have one entry per sequence \(2\)"):
        fastrnn.GRU(3, 4, dtype=D)(bad)


def test_well_formed_hand_built_packed_sequence_matches_torch():
    torch.manual_seed(0)
    ref, fast = nn.LSTM(3, 4, dtype=D), fastrnn.LSTM(3, 4, dtype=D)
    fast.load_state_dict(ref.state_dict())
    packed = PackedSequence(torch.randn(6, 3, dtype=D), torch.tensor([3, 2, 1]))
    run_and_compare(ref, fast, packed)


# ----------------------------------------------------------------------------- item 5


def _h(*shape):
    return torch.randn(*shape, dtype=D)


@pytest.mark.parametrize("hx,error,message,torch_same", [
    ((_h(2, 4), _h(2, 4), _h(2, 4)), RuntimeError, "expects two hidden states", True),
    ((_h(2, 4),), RuntimeError, "expects two hidden states", True),
    ((), RuntimeError, "expects two hidden states", True),
    (torch.stack([_h(2, 4), _h(2, 4)]), TypeError,
     r"tuple \(h_0, c_0\) of two tensors, got a Tensor of shape \(2, 2, 4\)", True),
    (_h(2, 4), TypeError, "got a Tensor of shape", True),
    # torch.nn: AttributeError ('NoneType' object has no attribute 'dim'), TypeError (not iterable)
    ((_h(2, 4), None), TypeError, r"hx\[1\] must be a Tensor, got NoneType", False),
    (3, TypeError, "got int", True),
], ids=["3-tuple", "1-tuple", "empty", "stacked", "tensor", "with-None", "int"])
def test_lstm_cell_hx_must_be_a_pair(hx, error, message, torch_same):
    """torch.nn raises the same types for the tuple and tensor forms ("lstm_cell expects two
    hidden states"; "must be tuple of Tensors, not Tensor"); fastrnn once ran a 3-tuple and a
    stacked (2, B, H) tensor silently."""
    with pytest.raises(error, match=message):
        fastrnn.LSTMCell(3, 4, dtype=D)(_h(2, 3), hx)
    if torch_same:
        with pytest.raises(error):
            nn.LSTMCell(3, 4, dtype=D)(_h(2, 3), hx)


def test_lstm_cell_hx_list_accepted_as_torch():
    torch.manual_seed(1)
    ref, fast = make_cell_pair("LSTMCell", 3, 4)
    hx = [_h(2, 4), _h(2, 4)]
    x = _h(2, 3)
    for a, b in zip(fast(x, hx), ref(x, hx)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_state_dims_must_follow_the_input(kind):
    """A 1-D state for a batched input gave a bare IndexError (batch == hidden_size; torch.nn
    too), a 2-D state for an unbatched input a hidden_size error about the batch (torch.nn too):
    fastrnn says which dimensionality it expected."""
    ref_cls, fast_cls, extra = CELLS[kind]
    cell = fast_cls(3, 4, **extra)

    def hx(*shape):
        h = torch.randn(*shape)
        return (h, h) if kind == "LSTMCell" else h

    with pytest.raises(IndexError):
        ref_cls(3, 4, **extra)(torch.randn(4, 3), hx(4))
    with pytest.raises(RuntimeError, match="for batched 2-D input, hidden0 should also be 2-D, got 1-D"):
        cell(torch.randn(4, 3), hx(4))
    with pytest.raises(RuntimeError, match="for unbatched 1-D input, hidden0 should also be 1-D, got 2-D"):
        cell(torch.randn(3), hx(2, 4))


# ----------------------------------------------------------------------------- item 6


@pytest.mark.parametrize("sizes", [(3, 0), (0, 4), (0, 0)])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cells_with_size_0_match_torch(kind, sizes):
    """torch's own test_RNN_cell_forward_zero_hidden_size: a (3, 0) state comes out."""
    torch.manual_seed(2)
    ref, fast = make_cell_pair(kind, *sizes)
    x = _h(3, sizes[0])
    out_ref, out_fast = ref(x), fast(x)
    for a, b in zip(out_ref if isinstance(out_ref, tuple) else (out_ref,),
                    out_fast if isinstance(out_fast, tuple) else (out_fast,)):
        assert a.shape == b.shape == (3, sizes[1])
        torch.testing.assert_close(b, a)
    if sizes[1] > 0:
        hx = (_h(3, 4), _h(3, 4)) if kind == "LSTMCell" else _h(3, 4)
        run_and_compare(ref, fast, x, hx)


@pytest.mark.parametrize("bias", [1, 0, np.bool_(True), np.bool_(False), None, 2])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_bias_taken_for_its_truth_as_torch(kind, bias):
    ref_cls, fast_cls, extra = CELLS[kind]
    ref, fast = ref_cls(3, 4, bias=bias, **extra), fast_cls(3, 4, bias=bias, **extra)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert fast.bias is bias
    fast.load_state_dict(ref.state_dict(), strict=True)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_integer_sizes_as_torch(kind):
    ref_cls, fast_cls, extra = CELLS[kind]
    for args in ((np.int64(3), 4), (3, True)):
        ref, fast = ref_cls(*args, **extra), fast_cls(*args, **extra)
        assert fast.weight_hh.shape == ref.weight_hh.shape
    with pytest.raises(RuntimeError, match="negative dimension"):
        ref_cls(3, -1, **extra)
    with pytest.raises(RuntimeError, match="negative dimension -1: hidden_size"):
        fast_cls(3, -1, **extra)
    with pytest.raises(TypeError):
        ref_cls(3.0, 4, **extra)
    with pytest.raises(TypeError, match="input_size should be of type int, got: float"):
        fast_cls(3.0, 4, **extra)


def test_module_positional_bool_size_as_torch():
    """torch.nn.LSTM(4, True) is a hidden size of 1 (bool is an int); num_layers=True stays a
    TypeError (torch.nn accepts it and fails in every forward with a TypeError)."""
    ref, fast = nn.LSTM(4, True, dtype=D), fastrnn.LSTM(4, True, dtype=D)
    fast.load_state_dict(ref.state_dict())
    run_and_compare(ref, fast, _h(3, 2, 4))
    with pytest.raises(TypeError, match="num_layers should be of type int, got: bool"):
        fastrnn.LSTM(4, 4, True)
    with pytest.raises(TypeError):
        nn.LSTM(4, 4, True)(_h(3, 2, 4).float())


@pytest.mark.parametrize("shape,batch_first", [((0, 3, 4), False), ((3, 0, 4), True), ((0, 4), False),
                                               ((0, 0, 4), False)])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_sequence_length_0_raises_as_torch(cls, shape, batch_first):
    x = torch.randn(*shape)
    for lib in (nn, fastrnn):
        with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
            getattr(lib, cls)(4, 4, batch_first=batch_first)(x)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_input_dim_message_as_torch(cls):
    for lib in (nn, fastrnn):  # torch.nn.RNN says "got 4D tensor instead", LSTM and GRU "got 4D instead"
        with pytest.raises(ValueError, match=rf"^{cls}: Expected input to be 2D or 3D, got 4D"):
            getattr(lib, cls)(4, 4)(torch.randn(1, 2, 3, 4))


def test_module_sizes_0_still_rejected_as_torch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for args in ((0, 4), (4, 0)):
            for lib in (nn, fastrnn):
                with pytest.raises(ValueError, match="must be greater than zero"):
                    lib.GRU(*args)
