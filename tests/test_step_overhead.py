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


def _pair(kind):
    torch.manual_seed(0)
    ref, fast = getattr(nn, kind)(H, H), getattr(fastrnn, kind)(H, H)
    fast.load_state_dict(ref.state_dict())
    cell = kind.endswith("Cell")
    x = torch.randn(1, H) if cell else torch.randn(1, 1, H)
    h = torch.randn(1, H) if cell else torch.randn(1, 1, H)
    hx = (h, torch.randn_like(h)) if kind.startswith("LSTM") else h
    return ref, fast, x, hx


def _flat(result):
    return [result] if isinstance(result, torch.Tensor) else [t for item in result for t in _flat(item)]


@pytest.mark.parametrize("with_state", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_batch1_step_makes_no_more_python_calls_than_torch_nn(kind, with_state, monkeypatch):
    monkeypatch.delenv(fastrnn.backends.ENV_VAR, raising=False)
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
