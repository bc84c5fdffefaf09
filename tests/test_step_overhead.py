"""Batch-1 steps (issue 21, item 5): the per-call Python work of a cell or single-step layer is
no more than torch.nn's own.

RL rollouts and streaming inference call a cell or a layer one step at a time, where the Python
around torch's kernel (checks, the backend decision) is a large part of a step. Timing asserts
are not allowed (speed is the benchmark's business: ``bench/auto_vs_torch.py --only steps``), so
this counts what the time goes to: the Python function calls of one step, fastrnn's (backend
``auto``, which on the CPU runs torch's kernel) against torch.nn's for the same step, both
counted the same way (``sys.setprofile``, Python frames only). The outputs are torch.nn's too.
"""

import sys

import pytest
import torch
from torch import nn

import fastrnn

H = 32
KINDS = ("LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RNN")


def python_calls(module, *args) -> int:
    """Python function calls made by one call of ``module(*args)`` (after a warm-up call)."""
    module(*args)  # warm-up: the backend decision is remembered from here on
    count = [0]

    def profile(frame, event, arg):
        if event == "call":
            count[0] += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        module(*args)
    finally:
        sys.setprofile(previous)
    return count[0]


def _both(kind, **kwargs):
    """torch.nn's and fastrnn's ``kind`` with the same weights."""
    torch.manual_seed(1)
    ref, fast = getattr(nn, kind)(H, H, **kwargs), getattr(fastrnn, kind)(H, H, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _pair(kind):
    """_both(kind) with a batch-1 step's input and state."""
    ref, fast = _both(kind)
    cell = kind.endswith("Cell")
    x = torch.randn(1, H) if cell else torch.randn(1, 1, H)
    h = torch.randn(1, H) if cell else torch.randn(1, 1, H)
    hx = (h, torch.randn_like(h)) if kind.startswith("LSTM") else h
    return ref, fast, x, hx


def _flat(result):
    return [result] if isinstance(result, torch.Tensor) else [t for item in result for t in _flat(item)]


@pytest.mark.parametrize("with_state", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_batch1_step_makes_no_more_python_calls_than_torch_nn(kind, with_state, auto_backend):
    ref, fast, x, hx = _pair(kind)
    args = (x, hx) if with_state else (x,)
    with torch.no_grad():
        for got, want in zip(_flat(fast(*args)), _flat(ref(*args))):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch_calls, fastrnn_calls = python_calls(ref, *args), python_calls(fast, *args)
    assert fastrnn_calls <= torch_calls, (kind, fastrnn_calls, torch_calls)


def test_the_count_sees_python_calls():
    """The counter counts: a module whose forward calls a Python helper three times adds three."""

    class Helper(nn.Module):
        def forward(self, x):
            for _ in range(3):
                x = self.helper(x)
            return x

        @staticmethod
        def helper(x):
            return x

    class Plain(nn.Module):
        def forward(self, x):
            return x

    x = torch.ones(1)
    assert python_calls(Helper(), x) == python_calls(Plain(), x) + 3


# What the per-step path reads the weights from (``_parameters``, by name for the rest) must
# still follow every way code changes them between steps.


class _Scale(nn.Module):
    def forward(self, weight):
        return weight * 0.5


def _same_step(ref, fast, kind):
    x = torch.randn(1, H)
    h = torch.randn(1, H)
    hx = (h, torch.randn_like(h)) if kind == "LSTMCell" else h
    for got, want in zip(_flat(fast(x, hx)), _flat(ref(x, hx))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_a_cell_step_follows_changed_weights(kind, auto_backend):
    """On ``auto`` (the CPU: torch's cell kernel, fastrnn's per-step path) as torch.nn, bit for bit."""
    from torch.nn.utils import parametrize

    ref, fast = _both(kind)
    _same_step(ref, fast, kind)
    # a parameter replaced between steps
    new = torch.randn_like(ref.weight_ih)
    ref.weight_ih, fast.weight_ih = nn.Parameter(new.clone()), nn.Parameter(new.clone())
    _same_step(ref, fast, kind)
    # weight drop (AWD-LSTM): the parameter removed, a plain tensor under its name
    dropped = torch.randn_like(ref.weight_hh)
    for m in (ref, fast):
        del m._parameters["weight_hh"]
        m.weight_hh = dropped.clone()
    _same_step(ref, fast, kind)
    # a parametrized weight
    ref, fast = _both(kind)
    for m in (ref, fast):
        parametrize.register_parametrization(m, "weight_ih", _Scale())
    _same_step(ref, fast, kind)
    # no bias
    ref, fast = _both(kind, bias=False)
    _same_step(ref, fast, kind)


def test_a_layer_step_checks_the_weight_it_runs(auto_backend):
    """The input's dtype is checked against the weight the step will run, also after the weight
    was replaced (the per-step path reads it from ``_parameters``)."""
    lstm = fastrnn.LSTM(H, H)
    x = torch.randn(1, 1, H)
    lstm(x)
    lstm.weight_ih_l0 = nn.Parameter(lstm.weight_ih_l0.detach().double())
    with pytest.raises(ValueError, match=r"input dtype \(torch.float32\) does not match weight dtype \(torch.float64\)"):
        lstm(x)


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_fire_on_every_step(kind, auto_backend):
    _, fast, x, hx = _pair(kind)
    seen = []
    fast.register_forward_pre_hook(lambda module, args: seen.append("pre"))
    fast.register_forward_hook(lambda module, args, out: seen.append("post"))
    for _ in range(3):
        fast(x, hx)
    assert seen == ["pre", "post"] * 3
