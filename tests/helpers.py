"""Shared helpers: torch.nn / fastrnn module pairs with identical weights, and comparisons.

Everything here runs in float64, where fastrnn's reference backend and torch.nn differ only by
rounding (different summation order), so tolerances are a few ulps scaled by the magnitudes.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import torch
from torch import Tensor, nn

import fastrnn

DTYPE = torch.float64
# float64 rounding: results of a few dozen multiply-adds per element differ by ~1e-15 relative.
RTOL = 1e-10
ATOL = 1e-12

# cls_name -> (torch.nn class, fastrnn class, extra constructor kwargs)
MODULES = {
    "RNN_TANH": (nn.RNN, fastrnn.RNN, {"nonlinearity": "tanh"}),
    "RNN_RELU": (nn.RNN, fastrnn.RNN, {"nonlinearity": "relu"}),
    "LSTM": (nn.LSTM, fastrnn.LSTM, {}),
    "LSTM_PROJ": (nn.LSTM, fastrnn.LSTM, {"proj_size": 3}),
    "GRU": (nn.GRU, fastrnn.GRU, {}),
}

CELLS = {
    "RNNCell_tanh": (nn.RNNCell, fastrnn.RNNCell, {"nonlinearity": "tanh"}),
    "RNNCell_relu": (nn.RNNCell, fastrnn.RNNCell, {"nonlinearity": "relu"}),
    "LSTMCell": (nn.LSTMCell, fastrnn.LSTMCell, {}),
    "GRUCell": (nn.GRUCell, fastrnn.GRUCell, {}),
}


def _pair(table, cls_name, dtype, args, kw):
    torch_cls, fast_cls, extra = table[cls_name]
    kw = {**extra, **kw}
    ref = torch_cls(*args, dtype=dtype, **kw)
    # Perturb away from the init so that a wrongly loaded / ignored parameter cannot hide.
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fast = fast_cls(*args, dtype=dtype, **kw)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def make_pair(cls_name: str, input_size: int = 5, hidden_size: int = 24, dtype=DTYPE, **kw):
    """(torch.nn module, fastrnn module) of kind ``cls_name`` (a key of MODULES), same weights."""
    return _pair(MODULES, cls_name, dtype, (input_size, hidden_size), kw)


def make_cell_pair(cls_name: str, input_size: int = 5, hidden_size: int = 24, dtype=DTYPE, **kw):
    """(torch.nn cell, fastrnn cell) of kind ``cls_name`` (a key of CELLS), same weights."""
    return _pair(CELLS, cls_name, dtype, (input_size, hidden_size), kw)


def state_shapes(module, batch: int, batched: bool = True):
    """Shapes of (h0, c0 or None) for a torch.nn / fastrnn multi-layer module."""
    n = module.num_layers * (2 if module.bidirectional else 1)
    h_out = module.proj_size if getattr(module, "proj_size", 0) > 0 else module.hidden_size
    lead = (n, batch) if batched else (n,)
    c = lead + (module.hidden_size,) if isinstance(module, (nn.LSTM, fastrnn.LSTM)) else None
    return lead + (h_out,), c


def random_hx(module, batch: int, batched: bool = True, dtype=DTYPE):
    """Random non-zero initial state for ``module`` (a tensor, or (h0, c0) for LSTM)."""
    h_shape, c_shape = state_shapes(module, batch, batched)
    h0 = torch.randn(h_shape, dtype=dtype)
    if c_shape is None:
        return h0
    return (h0, torch.randn(c_shape, dtype=dtype))


def flat(x) -> List[Tensor]:
    """Tensors of a (possibly nested) output structure, PackedSequence -> its data."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return [x.data]
    if x is None:
        return []
    return [t for item in x for t in flat(item)]


def leaf_copy(x):
    """Detached, requires_grad copies of the tensors in a (nested) structure."""
    if isinstance(x, Tensor):
        return x.detach().clone().requires_grad_(x.dtype.is_floating_point)
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return nn.utils.rnn.PackedSequence(
            leaf_copy(x.data), x.batch_sizes, x.sorted_indices, x.unsorted_indices
        )
    if x is None:
        return None
    return type(x)(leaf_copy(item) for item in x)


def assert_close(actual, expected, rtol: float = RTOL, atol: float = ATOL, msg: str = "") -> None:
    """assert_close with the tolerance scaled by the magnitude of ``expected``."""
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=atol * scale, msg=(lambda m: f"{msg}: {m}") if msg else None
    )


def assert_close_grads(
    ref_module: nn.Module,
    fast_module: nn.Module,
    ref_inputs: Sequence[Tensor] = (),
    fast_inputs: Sequence[Tensor] = (),
    names: Sequence[str] = (),
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    """Gradients of every parameter (matched by name) and of each leaf input are equal.

    Every parameter and input must have a gradient on both sides: a missing gradient fails.
    """
    ref_params = dict(ref_module.named_parameters())
    fast_params = dict(fast_module.named_parameters())
    assert list(ref_params) == list(fast_params)
    for name, p in ref_params.items():
        q = fast_params[name]
        assert p.grad is not None, f"torch.nn gave no gradient for {name}"
        assert q.grad is not None, f"fastrnn gave no gradient for {name}"
        assert_close(q.grad, p.grad, rtol, atol, f"grad of {name}")
    labels = list(names) or [f"input {k}" for k in range(len(ref_inputs))]
    assert len(ref_inputs) == len(fast_inputs) == len(labels)
    for label, a, b in zip(labels, ref_inputs, fast_inputs):
        assert a.grad is not None, f"torch.nn gave no gradient for {label}"
        assert b.grad is not None, f"fastrnn gave no gradient for {label}"
        assert_close(b.grad, a.grad, rtol, atol, f"grad of {label}")


def run_and_compare(ref, fast, x, hx=None, rtol: float = RTOL, atol: float = ATOL):
    """Forward both modules on copies of (x, hx), compare outputs, then backprop one random
    upstream gradient through all outputs and compare gradients of x, hx and every parameter.

    Returns (ref_result, fast_result) for further checks.
    """
    x_ref, x_fast = leaf_copy(x), leaf_copy(x)
    h_ref, h_fast = leaf_copy(hx), leaf_copy(hx)
    ref_result = ref(x_ref) if hx is None else ref(x_ref, h_ref)
    fast_result = fast(x_fast) if hx is None else fast(x_fast, h_fast)
    compare_results(ref_result, fast_result, rtol, atol)

    ref_flat, fast_flat = flat(ref_result), flat(fast_result)
    upstream = [torch.randn_like(t) for t in ref_flat]
    torch.autograd.backward(ref_flat, upstream)
    torch.autograd.backward(fast_flat, upstream)

    ref_inputs, fast_inputs = flat(x_ref) + flat(h_ref), flat(x_fast) + flat(h_fast)
    names = ["input"] + [f"hx[{k}]" for k in range(len(ref_inputs) - 1)]
    assert_close_grads(ref, fast, ref_inputs, fast_inputs, names, rtol, atol)
    return ref_result, fast_result


def compare_results(ref_result, fast_result, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Same structure (tuple nesting, PackedSequence metadata), same values."""
    assert type(fast_result) is type(ref_result) or (
        isinstance(fast_result, tuple) and isinstance(ref_result, tuple)
    ), f"{type(fast_result)} vs {type(ref_result)}"
    if isinstance(ref_result, nn.utils.rnn.PackedSequence):
        assert isinstance(fast_result, nn.utils.rnn.PackedSequence)
        assert torch.equal(fast_result.batch_sizes, ref_result.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(ref_result, attr), getattr(fast_result, attr)
            assert (a is None) == (b is None), attr
            if a is not None:
                assert torch.equal(b, a), attr
        assert_close(fast_result.data, ref_result.data, rtol, atol, "packed output data")
        return
    if isinstance(ref_result, Tensor):
        assert isinstance(fast_result, Tensor)
        assert fast_result.shape == ref_result.shape
        assert fast_result.dtype == ref_result.dtype
        assert_close(fast_result, ref_result, rtol, atol)
        return
    assert len(fast_result) == len(ref_result)
    for a, b in zip(ref_result, fast_result):
        compare_results(a, b, rtol, atol)
