"""Code written against torch.nn's internals: ``_flat_weights`` / ``_flat_weights_names``.

Weight-drop implementations (AWD-LSTM style) and torch's own ``test_partial_flat_weights`` read
them, delete a weight and assign a plain tensor under its name. fastrnn's modules derive both from
the weights by name (``RNNBase._flat_weights``); these tests hold them to torch.nn's meaning, on
the default backend (torch's kernels) and on the reference.
"""

import pytest
import torch
import torch.nn.functional as F

import fastrnn

from helpers import assert_close, make_pair

BACKENDS = ["auto", "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Each test on the default backend (no FASTRNN_BACKEND: torch's kernels) and the reference."""
    if request.param == "auto":
        request.getfixturevalue("auto_backend")
    else:
        monkeypatch.setenv(fastrnn.backends.ENV_VAR, request.param)
    return request.param


@pytest.mark.parametrize("kind,kw", [("LSTM", {"num_layers": 2, "bidirectional": True}),
                                     ("LSTM_PROJ", {}), ("GRU", {"bias": False}), ("RNN_RELU", {})])
def test_flat_weights_read_as_torch_nn(kind, kw):
    ref, fast = make_pair(kind, **kw)
    assert fast._flat_weights_names == ref._flat_weights_names
    assert len(fast._flat_weights) == len(ref._flat_weights)
    for name, mine, theirs in zip(ref._flat_weights_names, fast._flat_weights, ref._flat_weights):
        assert mine is getattr(fast, name)
        assert torch.equal(mine, theirs), name


def test_partial_flat_weights(backend):
    """torch's test_partial_flat_weights on the CPU: delete a weight, move the module, set it again."""
    ref, fast = make_pair("LSTM", 10, 6, num_layers=2)
    x = torch.randn(3, 2, 10, dtype=torch.float64)
    expected = ref(x)[0]
    for module in (ref, fast):
        weight = module.weight_hh_l0
        del module.weight_hh_l0
        assert not hasattr(module, "weight_hh_l0")
        module.to("cpu")  # _apply -> flatten_parameters with a weight missing must not raise
        # torch.nn: "expected Tensor as element 1 in argument 2, but got NoneType"; fastrnn names it
        with pytest.raises(TypeError if module is ref else AttributeError, match="NoneType" if module is ref else "weight_hh_l0"):
            module(x)
        module.weight_hh_l0 = weight
    assert_close(fast(x)[0], expected)
    assert_close(ref(x)[0], expected)


def test_flat_weights_lists_none_for_a_deleted_weight():
    """As torch.nn's _init_flat_weights (``getattr(self, name) if hasattr(self, name) else None``)."""
    _, fast = make_pair("GRU", num_layers=2)
    del fast.weight_ih_l1
    flat = fast._flat_weights
    index = fast._flat_weights_names.index("weight_ih_l1")
    assert flat[index] is None
    assert all(w is getattr(fast, n) for k, (n, w) in enumerate(zip(fast._flat_weights_names, flat)) if k != index)


class WeightDrop(torch.nn.Module):
    """AWD-LSTM's weight drop, as its implementations write it: the raw weight is the parameter,
    and every forward assigns a dropped-out plain tensor under the module's weight name."""

    def __init__(self, module, names, p):
        super().__init__()
        self.module, self.names, self.p = module, names, p
        for name in names:
            weight = getattr(module, name)
            del module._parameters[name]
            module.register_parameter(name + "_raw", torch.nn.Parameter(weight.detach().clone()))

    def forward(self, *args):
        for name in self.names:
            raw = getattr(self.module, name + "_raw")
            setattr(self.module, name, F.dropout(raw, p=self.p, training=self.training))
        return self.module(*args)


def test_weight_drop(backend):
    ref, fast = make_pair("LSTM", 5, 8, num_layers=2)
    ref, fast = WeightDrop(ref, ["weight_hh_l0", "weight_hh_l1"], 0.5), WeightDrop(fast, ["weight_hh_l0", "weight_hh_l1"], 0.5)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    for _ in range(2):  # a new mask each forward, the same on both sides
        results = []
        for model in (ref, fast):
            torch.manual_seed(11)
            out, (h, c) = model(x)
            (out.sum() + h.sum() + c.sum()).backward()
            results.append((out, h, c))
        for mine, theirs in zip(results[1], results[0]):
            assert_close(mine, theirs)
        for name in ("weight_hh_l0_raw", "weight_hh_l1_raw", "weight_ih_l0"):
            g_ref, g_fast = getattr(ref.module, name).grad, getattr(fast.module, name).grad
            assert g_ref.abs().max() > 0
            assert_close(g_fast, g_ref)
        # the dropped weight really is what ran: a different mask gives a different output
    torch.manual_seed(12)
    assert not torch.allclose(fast(x)[0], results[1][0])


def test_assigning_flat_weights_is_refused_clearly():
    _, fast = make_pair("GRU")
    with pytest.raises(AttributeError, match="derived from the weights by name"):
        fast._flat_weights = []
