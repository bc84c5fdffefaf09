"""Dropout between layers: only in training, never after the last layer, warning as torch.nn."""

import warnings

import pytest
import torch
from torch import nn

import fastrnn
from helpers import MODULES, assert_close, make_pair, run_and_compare

KINDS = list(MODULES)


@pytest.mark.parametrize("kind", KINDS)
def test_eval_ignores_dropout_and_matches_torch(kind):
    torch.manual_seed(50)
    ref, fast = make_pair(kind, 5, 24, num_layers=3, dropout=0.5, bidirectional=True)
    ref.eval(), fast.eval()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    run_and_compare(ref, fast, x)
    # eval output is deterministic and equals the output of the same module built without dropout
    _, plain = make_pair(kind, 5, 24, num_layers=3, bidirectional=True)
    plain.load_state_dict(fast.state_dict())
    assert_close(fast(x)[0], plain(x)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_training_output_differs_from_eval(kind):
    torch.manual_seed(51)
    _, fast = make_pair(kind, 5, 24, num_layers=2, dropout=0.5)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    fast.eval()
    out_eval, state_eval = fast(x)
    fast.train()
    out_a, state_a = fast(x)
    out_b, _ = fast(x)
    assert not torch.allclose(out_a, out_eval)
    assert not torch.allclose(out_a, out_b)  # fresh masks each call
    # The first layer's final state is computed before any dropout: unchanged.
    h_eval = state_eval[0] if isinstance(state_eval, tuple) else state_eval
    h_a = state_a[0] if isinstance(state_a, tuple) else state_a
    assert_close(h_a[0], h_eval[0])
    assert not torch.allclose(h_a[1], h_eval[1])


@pytest.mark.parametrize("kind", KINDS)
def test_training_dropout_matches_torch_with_same_seed(kind):
    """On the CPU torch.nn draws its between-layer masks with F.dropout on each layer's output,
    in layer order, as fastrnn does; with the same seed both draw identical masks, so training
    outputs and gradients match too."""
    torch.manual_seed(52)
    ref, fast = make_pair(kind, 5, 24, num_layers=3, dropout=0.4, bidirectional=True)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(7)
    out_ref, _ = ref(x_ref)
    torch.manual_seed(7)
    out_fast, _ = fast(x_fast)
    assert_close(out_fast, out_ref)
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    out_fast.backward(g)
    assert_close(x_fast.grad, x_ref.grad)
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert_close(q.grad, p.grad, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_one_zeroes_next_layer_input_but_not_the_output(kind):
    """dropout=1.0 in training zeroes the input of layer 2, so the output is layer 2 run on zeros
    (not zero: no dropout after the last layer), and no gradient reaches the input."""
    torch.manual_seed(53)
    ref, fast = make_pair(kind, 5, 24, num_layers=2, dropout=1.0)
    fast.train()
    x = torch.randn(7, 3, 5, dtype=torch.float64, requires_grad=True)
    out, state = fast(x)

    torch_cls, _, extra = MODULES[kind]
    h_in = fast.proj_size if fast.proj_size else 24
    layer2 = torch_cls(h_in, 24, dtype=torch.float64, **extra)
    layer2.load_state_dict({k.replace("_l1", "_l0"): v for k, v in fast.state_dict().items() if "_l1" in k})
    out2, _ = layer2(torch.zeros(7, 3, h_in, dtype=torch.float64))
    assert_close(out, out2)
    assert torch.count_nonzero(out) > 0

    out.backward(torch.randn_like(out))
    assert torch.count_nonzero(x.grad) == 0
    assert torch.count_nonzero(fast.weight_ih_l0.grad) == 0
    assert torch.count_nonzero(fast.weight_hh_l1.grad) > 0


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_TANH"])
def test_dropout_one_same_as_torch(kind):
    torch.manual_seed(54)
    ref, fast = make_pair(kind, 5, 24, num_layers=2, dropout=1.0, bidirectional=True)
    run_and_compare(ref, fast, torch.randn(7, 3, 5, dtype=torch.float64))


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_warning_for_dropout_with_one_layer(cls):
    with pytest.warns(UserWarning, match="num_layers greater than 1") as torch_record:
        getattr(nn, cls)(5, 4, dropout=0.3)
    with pytest.warns(UserWarning, match="num_layers greater than 1") as fast_record:
        getattr(fastrnn, cls)(5, 4, dropout=0.3)
    assert len(fast_record) == len(torch_record) == 1
    message = str(fast_record[0].message)
    assert "dropout=0.3" in message and "num_layers=1" in message
    # stacklevel points at the caller's line (this file), as torch.nn's does
    assert fast_record[0].filename == __file__


@pytest.mark.parametrize("kw", [dict(dropout=0.3, num_layers=2), dict(dropout=0.0), dict()])
def test_no_warning_otherwise(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastrnn.LSTM(5, 4, **kw)


@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_training_dropout_matches_torch_with_same_seed(kind, enforce_sorted):
    """torch.nn drops out the packed rows of each layer's output (not a padded batch), so the
    number and order of its random draws differ from the padded case; fastrnn's masks are
    torch.nn's for the same seed with PackedSequence input too (lengths with ties)."""
    torch.manual_seed(55)
    ref, fast = make_pair(kind, 5, 24, num_layers=3, dropout=0.4, bidirectional=True)
    lengths = [7, 2, 5, 7, 1] if not enforce_sorted else [7, 7, 5, 2, 1]
    x = torch.randn(7, len(lengths), 5, dtype=torch.float64)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    results = []
    for module in (ref, fast):
        data = packed.data.clone().requires_grad_()
        torch.manual_seed(8)
        out, state = module(nn.utils.rnn.PackedSequence(data, *packed[1:]))
        results.append((out.data, state, data))
    (out_ref, state_ref, data_ref), (out_fast, state_fast, data_fast) = results
    assert_close(out_fast, out_ref)
    for a, b in zip(state_fast if isinstance(state_fast, tuple) else (state_fast,),
                    state_ref if isinstance(state_ref, tuple) else (state_ref,)):
        assert_close(a, b)
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    out_fast.backward(g)
    assert_close(data_fast.grad, data_ref.grad)
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert_close(q.grad, p.grad, msg=name)
