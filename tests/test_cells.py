"""fastrnn.RNNCell / LSTMCell / GRUCell against torch.nn cells in float64, same weights."""

import pytest
import torch
from torch import nn

from helpers import CELLS, make_cell_pair, run_and_compare


def _hx(kind, shape):
    h = torch.randn(shape, dtype=torch.float64)
    return (h, torch.randn(shape, dtype=torch.float64)) if kind == "LSTMCell" else h


@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_given"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch", [None, 1, 3, 17], ids=["unbatched", "B1", "B3", "B17"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_torch(kind, batch, bias, with_hx):
    torch.manual_seed(30)
    ref, fast = make_cell_pair(kind, 5, 24, bias=bias)
    lead = () if batch is None else (batch,)
    x = torch.randn(lead + (5,), dtype=torch.float64)
    hx = _hx(kind, lead + (24,)) if with_hx else None
    ref_out, fast_out = run_and_compare(ref, fast, x, hx)
    outs = fast_out if isinstance(fast_out, tuple) else (fast_out,)
    for t in outs:
        assert t.shape == lead + (24,)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_same_seed_same_parameters_and_repr(kind):
    torch_cls, fast_cls, extra = CELLS[kind]
    torch.manual_seed(31)
    ref = torch_cls(5, 24, **extra)
    torch.manual_seed(31)
    fast = fast_cls(5, 24, **extra)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert q.shape == p.shape and torch.equal(q, p), name
    assert repr(fast) == repr(ref)


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_without_bias_has_none_bias_attributes(kind):
    torch_cls, fast_cls, extra = CELLS[kind]
    ref, fast = torch_cls(5, 24, bias=False, **extra), fast_cls(5, 24, bias=False, **extra)
    assert fast.bias_ih is None and fast.bias_hh is None
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert repr(fast) == repr(ref)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell_tanh"])
def test_cell_unrolled_equals_layer(kind):
    """Stepping a cell over a sequence equals the corresponding torch.nn layer (same weights)."""
    torch.manual_seed(32)
    _, cell = make_cell_pair(kind, 5, 24)
    layer_cls = {"LSTMCell": nn.LSTM, "GRUCell": nn.GRU, "RNNCell_tanh": nn.RNN}[kind]
    layer = layer_cls(5, 24, dtype=torch.float64)
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    state = None
    outs = []
    for t in range(6):
        state = cell(x[t], state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    out_ref, _ = layer(x)
    torch.testing.assert_close(torch.stack(outs), out_ref, rtol=1e-10, atol=1e-12)


def test_a_new_cell_runs_on_the_reference_and_the_others_say_why_not(monkeypatch):
    """Step 1 of cells.py's "adding a cell": a Cell with kernel_id=None runs under "auto" (on the
    reference, which reads only the table) and every other backend refuses it with a reason."""
    import dataclasses

    from fastrnn import backends, cells
    from fastrnn.functional import rnn_layer

    scaled = dataclasses.replace(cells.RNN_TANH, name="scaled_tanh", mode="SCALED_TANH", kernel_id=None,
                                 update=lambda gx, gh, h, c: (0.5 * torch.tanh(gx if gh is None else gx + gh), None))
    monkeypatch.setitem(cells.CELLS, scaled.name, scaled)
    monkeypatch.delenv(backends.ENV_VAR, raising=False)  # "auto" decides
    x, h0 = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    w_ih, w_hh = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64)
    out, h, c = rnn_layer(scaled, x, h0, None, w_ih, w_hh)
    expected = h0
    for t in range(4):
        expected = 0.5 * torch.tanh(x[t] @ w_ih.t() + expected @ w_hh.t())
    torch.testing.assert_close(h, expected)
    assert c is None and out.shape == (4, 2, 5)
    problem = backends.layer_problem(scaled, x, w_hh, None, False, False)
    choice = backends.explain(problem)
    assert choice.backend == "reference"
    for name in ("torch", "triton", "cuda"):
        assert "scaled_tanh" in backends.get_backend(name).unsupported(problem)


def test_kernels_name_cells_never_by_number():
    """The Triton kernels compare their constexpr CELL with named cells (triton/cell_step.py),
    and the CUDA host code reads cell traits, not ids (csrc/launch.h: CellInfo)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    for path in sorted((root / "fastrnn" / "triton").glob("*.py")):
        hits = re.findall(r"CELL\s*(?:==|!=|<=|>=|<|>)\s*\d", path.read_text())
        assert not hits, f"{path.name} compares CELL with a number: {hits}"
    # The CUDA host code (csrc/*); csrc/cpu/ is the CPU backend's, with its own named cell ids
    # and traits (csrc/cpu/cells.h).
    for path in sorted(p for p in (root / "csrc").glob("*") if p.is_file()):
        text = path.read_text()
        assert not re.search(r"cell\s*==\s*k(Lstm|Gru|RnnTanh|RnnRelu)\b", text), path.name
        assert "num_gates(cell)" not in text, path.name
