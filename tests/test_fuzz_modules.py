"""Seeded differential fuzzing of the modules and cells against torch.nn (float64, CPU), on
backend="reference" named explicitly: random configurations (cell, layers, directions, bias,
batch_first, dropout in training, eval-mode backward, padded / packed / unbatched input, batch 0,
given or absent states, non-contiguous inputs and states), each compared in outputs, final states
and the gradients of the input, the states and every parameter. A failing case names its seed:
``pytest "tests/test_fuzz_modules.py::test_module_matches_torch[17]"`` reruns it. Bounded: a few seconds in all.

Also fuzzed: bad input. Each case breaks one thing of a valid call; where torch.nn raises,
fastrnn must raise the same exception type (its message is tested in test_errors.py and
test_edge_cases.py); where torch.nn runs, fastrnn must run and agree, except for the deliberate
differences listed in README's decisions (``DELIBERATE`` below).
"""

import random
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from helpers import CELLS, MODULES, compare_results, flat, leaf_copy, make_cell_pair, make_pair, run_and_compare

D = torch.float64
MODULE_CASES = 80
CELL_CASES = 40
BAD_INPUT_CASES = 100


def scrambled(t):
    """The same values, non-contiguous: stored with the first two dimensions swapped."""
    if t.dim() < 2 or t.numel() == 0:
        return t
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def on_reference(table, kind, ref, *args, **kw):
    """The fastrnn twin of ``ref`` (from make_pair / make_cell_pair) on backend="reference"."""
    _, fast_cls, extra = table[kind]
    fast = fast_cls(*args, dtype=D, backend="reference", **extra, **kw)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return fast


def module_case(seed):
    rng = random.Random(seed)
    kind = rng.choice(list(MODULES))
    cfg = dict(
        num_layers=rng.choice([1, 1, 2, 3]),
        bidirectional=rng.random() < 0.5,
        bias=rng.random() < 0.8,
        batch_first=rng.random() < 0.4,
    )
    if kind == "LSTM_PROJ":
        hidden = rng.randint(4, 7)
    else:
        hidden = rng.randint(1, 6)
    input_size = rng.randint(1, 5)
    form = rng.choice(["padded", "padded", "packed", "packed-sorted", "unbatched"])
    batch = rng.choice([0, 1, 2, 3, 5]) if form == "padded" else rng.randint(1, 4)
    seq_len = rng.randint(1, 5)
    training = rng.random() < 0.3 and cfg["num_layers"] > 1
    if training:
        cfg["dropout"] = rng.choice([0.25, 0.5])
    return kind, input_size, hidden, cfg, form, batch, seq_len, training, rng


@pytest.mark.parametrize("seed", range(MODULE_CASES))
def test_module_matches_torch(seed):
    kind, input_size, hidden, cfg, form, batch, seq_len, training, rng = module_case(seed)
    torch.manual_seed(seed)
    ref, _ = make_pair(kind, input_size, hidden, **cfg)
    fast = on_reference(MODULES, kind, ref, input_size, hidden, **cfg)
    ref.train(training)
    fast.train(training)  # eval mode: backward must work all the same
    gen = torch.Generator().manual_seed(seed)
    if form == "unbatched":
        x = torch.randn(seq_len, input_size, generator=gen, dtype=D)
    else:
        shape = (batch, seq_len, input_size) if cfg["batch_first"] else (seq_len, batch, input_size)
        x = torch.randn(shape, generator=gen, dtype=D)
        if rng.random() < 0.5:
            x = scrambled(x)
    if form.startswith("packed"):
        lengths = sorted((rng.randint(1, seq_len) for _ in range(batch)), reverse=form == "packed-sorted")
        lengths[rng.randrange(batch)] = seq_len  # the padded length is the longest one
        if form == "packed-sorted":
            lengths.sort(reverse=True)
        x = pack_padded_sequence(x, torch.tensor(lengths), batch_first=cfg["batch_first"],
                                 enforce_sorted=form == "packed-sorted")
    hx = None
    if rng.random() < 0.6:
        n = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
        lead = (n,) if form == "unbatched" else (n, batch)
        h_out = ref.proj_size if getattr(ref, "proj_size", 0) else hidden
        h = torch.randn(lead + (h_out,), generator=gen, dtype=D)
        c = torch.randn(lead + (hidden,), generator=gen, dtype=D)
        if rng.random() < 0.5:  # e.g. states kept batch-first, passed transposed
            h, c = scrambled(h), scrambled(c)
        hx = (h, c) if kind.startswith("LSTM") else h
    state = torch.random.get_rng_state()
    x_ref, x_fast, h_ref, h_fast = leaf_copy(x), leaf_copy(x), leaf_copy(hx), leaf_copy(hx)
    torch.random.set_rng_state(state)
    out_ref = ref(x_ref) if hx is None else ref(x_ref, h_ref)
    torch.random.set_rng_state(state)  # training: the same dropout masks (README decisions)
    out_fast = fast(x_fast) if hx is None else fast(x_fast, h_fast)
    compare_results(out_ref, out_fast)
    upstream = [torch.randn(t.shape, generator=gen, dtype=D) for t in flat(out_ref)]
    torch.autograd.backward(flat(out_ref), upstream)
    torch.autograd.backward(flat(out_fast), upstream)
    for a, b in zip(flat(x_ref) + flat(h_ref), flat(x_fast) + flat(h_fast)):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12)
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("seed", range(CELL_CASES))
def test_cell_matches_torch(seed):
    rng = random.Random(1000 + seed)
    kind = rng.choice(list(CELLS))
    input_size, hidden = rng.randint(0, 5), rng.choice([0, 1, 3, 6])
    batched = rng.random() < 0.7
    batch = rng.choice([0, 1, 3]) if batched else None
    bias = rng.choice([True, False, 1, 0])
    torch.manual_seed(seed)
    ref, _ = make_cell_pair(kind, input_size, hidden, bias=bias)
    fast = on_reference(CELLS, kind, ref, input_size, hidden, bias=bias)
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if batched else ()
    x = torch.randn(lead + (input_size,), generator=gen, dtype=D)
    hx = None
    if rng.random() < 0.6:
        states = [torch.randn(lead + (hidden,), generator=gen, dtype=D) for _ in range(2)]
        if batched and rng.random() < 0.5:
            states = [s.t().contiguous().t() for s in states]
        hx = tuple(states) if kind == "LSTMCell" else states[0]
    if input_size == 0 or hidden == 0 or batch == 0:
        out_ref = ref(x) if hx is None else ref(x, hx)
        out_fast = fast(x) if hx is None else fast(x, hx)
        compare_results(out_ref, out_fast)
        return
    run_and_compare(ref, fast, x, hx)


# ----------------------------------------------------------------------------- bad input

# Where fastrnn deliberately differs from torch.nn (README "Decisions"): mutation -> why.
DELIBERATE = {
    "packed_batch_sizes_short": "torch.nn quietly ignores rows beyond sum(batch_sizes)",
    "packed_batch_sizes_zero": "torch.nn quietly drops steps with 0 sequences",
    "packed_batch_sizes_int32": "fastrnn accepts any integer dtype",
    "packed_input_size_lstm": "torch.nn's LSTM (oneDNN path) runs packed input of the wrong size",
    "c0_dtype": "torch.nn promotes a c0 of another dtype; fastrnn raises",
    "lstm_cell_hx_none_member": "torch.nn raises AttributeError, fastrnn TypeError",
    "cell_hx_unbatched_for_batched": "torch.nn raises IndexError when batch == hidden_size, fastrnn RuntimeError",
}


def _bad_input_case(seed):
    """-> (mutation name, call(lib) that builds a module or cell and runs it on broken input)."""
    rng = random.Random(5000 + seed)
    if rng.random() < 0.35:
        return _bad_cell_input_case(rng, seed)
    cls = rng.choice(["RNN", "LSTM", "GRU"])
    lstm = cls == "LSTM"
    I, H, T, B = rng.randint(2, 4), rng.randint(2, 4), rng.randint(1, 3), rng.randint(1, 3)
    layers = rng.choice([1, 2])
    gen = torch.Generator().manual_seed(seed)

    def t(*shape, dtype=D):
        return torch.randn(*shape, generator=gen, dtype=D).to(dtype)

    mutations = {
        "input_size": lambda: (t(T, B, I + 1), None),
        "input_size_unbatched": lambda: (t(T, I + 1), None),
        "input_dims_4": lambda: (t(T, B, I, 1), None),
        "input_dims_1": lambda: (t(I), None),
        "input_dtype": lambda: (t(T, B, I, dtype=torch.float32), None),
        "input_dtype_and_size": lambda: (t(T, B, I + 1, dtype=torch.float32), None),
        "seq_len_0": lambda: (t(0, B, I), None),
        "h0_batch": lambda: (t(T, B, I), (t(layers, B + 1, H), t(layers, B + 1, H))),
        "h0_layers": lambda: (t(T, B, I), (t(layers + 1, B, H), t(layers + 1, B, H))),
        "h0_hidden": lambda: (t(T, B, I), (t(layers, B, H + 1), t(layers, B, H))),
        "h0_dims": lambda: (t(T, B, I), (t(B, H), t(B, H))),
        "h0_dims_unbatched": lambda: (t(T, I), (t(layers, B, H), t(layers, B, H))),
        "c0_hidden": lambda: (t(T, B, I), (t(layers, B, H), t(layers, B, H + 1))),
        "c0_dtype": lambda: (t(T, B, I), (t(layers, B, H), t(layers, B, H, dtype=torch.float32))),
        "packed_input_size": lambda: (pack_padded_sequence(t(T, B, I + 1), torch.full((B,), T)), None),
        "packed_batch_sizes_rising": lambda: (PackedSequence(t(3, I), torch.tensor([1, 2])), None),
        "packed_batch_sizes_negative": lambda: (PackedSequence(t(3, I), torch.tensor([3, -1])), None),
        "packed_batch_sizes_short": lambda: (PackedSequence(t(4, I), torch.tensor([2, 1])), None),
        "packed_batch_sizes_zero": lambda: (PackedSequence(t(2, I), torch.tensor([2, 0])), None),
        "packed_batch_sizes_int32": lambda: (PackedSequence(t(4, I), torch.tensor([2, 2], dtype=torch.int32)), None),
    }
    name = rng.choice(sorted(mutations))
    x, hx = mutations[name]()
    if hx is not None and not lstm:
        hx = hx[0]
    if name == "c0_dtype" and not lstm:
        name, hx = "h0_dtype", t(layers, B, H, dtype=torch.float32)
    if name == "packed_input_size" and lstm:
        name = "packed_input_size_lstm"

    def call(lib):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = {} if lib is nn else {"backend": "reference"}
            module = getattr(lib, cls)(I, H, num_layers=layers, dtype=D, **extra)
        torch.manual_seed(seed)  # same weights on both sides
        for p in module.parameters():
            nn.init.uniform_(p, -0.5, 0.5)
        return module(x) if hx is None else module(x, hx)

    return name, call


def _bad_cell_input_case(rng, seed):
    cls = rng.choice(["RNNCell", "LSTMCell", "GRUCell"])
    lstm = cls == "LSTMCell"
    I, H, B = rng.randint(2, 4), rng.randint(2, 4), rng.randint(1, 3)
    gen = torch.Generator().manual_seed(seed)

    def t(*shape, dtype=D):
        return torch.randn(*shape, generator=gen, dtype=D).to(dtype)

    mutations = {
        "cell_input_size": lambda: (t(B, I + 1), None),
        "cell_input_size_unbatched": lambda: (t(I + 1), None),
        "cell_input_dims_3": lambda: (t(1, B, I), None),
        "cell_input_dims_0": lambda: (t(()), None),
        "cell_input_dtype": lambda: (t(B, I, dtype=torch.float32), None),
        "cell_input_dtype_and_size": lambda: (t(B, I + 1, dtype=torch.float32), None),
        "cell_hx_batch": lambda: (t(B, I), (t(B + 1, H), t(B + 1, H))),
        "cell_hx_hidden": lambda: (t(B, I), (t(B, H + 1), t(B, H))),
        "cell_hx_dims_3": lambda: (t(B, I), (t(1, B, H), t(1, B, H))),
        "cell_hx_unbatched_for_batched": lambda: (t(B, I), (t(H), t(H))),
        "cell_hx_batched_for_unbatched": lambda: (t(I), (t(B, H), t(B, H))),
        "cell_hx_dtype": lambda: (t(B, I), (t(B, H, dtype=torch.float32), t(B, H))),
    }
    if lstm:
        mutations.update({
            "lstm_cell_hx_triple": lambda: (t(B, I), (t(B, H), t(B, H), t(B, H))),
            "lstm_cell_hx_single": lambda: (t(B, I), (t(B, H),)),
            "lstm_cell_hx_stacked": lambda: (t(B, I), t(2, B, H)),
            "lstm_cell_hx_none_member": lambda: (t(B, I), (t(B, H), None)),
        })
    name = rng.choice(sorted(mutations))
    x, hx = mutations[name]()
    if hx is not None and not lstm:
        hx = hx[0]

    def call(lib):
        extra = {} if lib is nn else {"backend": "reference"}
        cell = getattr(lib, cls)(I, H, dtype=D, **extra)
        torch.manual_seed(seed)
        for p in cell.parameters():
            nn.init.uniform_(p, -0.5, 0.5)
        return cell(x) if hx is None else cell(x, hx)

    return name, call


def _outcome(call, lib):
    try:
        return call(lib), None
    except Exception as error:  # the exception itself is what is compared
        return None, error


@pytest.mark.parametrize("seed", range(BAD_INPUT_CASES))
def test_bad_input_raises_as_torch(seed):
    name, call = _bad_input_case(seed)
    ref, ref_error = _outcome(call, nn)
    got, error = _outcome(call, __import__("fastrnn"))
    if name in DELIBERATE:
        return  # covered with the reason in test_edge_cases.py / test_errors.py
    if ref_error is not None:
        assert error is not None, f"{name}: torch.nn raised {ref_error!r}, fastrnn ran"
        assert type(error) is type(ref_error), f"{name}: torch.nn raised {ref_error!r}, fastrnn {error!r}"
    else:
        assert error is None, f"{name}: torch.nn ran, fastrnn raised {error!r}"
        compare_results(ref, got)
