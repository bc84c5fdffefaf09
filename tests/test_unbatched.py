"""Unbatched (2-D) input and 2-D hx, as torch.nn accepts them, with batch_first both ways."""

import pytest
import torch

from helpers import MODULES, make_pair, random_hx, run_and_compare


@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_given"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(MODULES))
def test_unbatched_matches_torch(kind, bidirectional, batch_first, with_hx):
    torch.manual_seed(20)
    ref, fast = make_pair(kind, 5, 24, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(7, 5, dtype=torch.float64)
    hx = random_hx(ref, 1, batched=False) if with_hx else None
    (out_ref, state_ref), (out_fast, state_fast) = run_and_compare(ref, fast, x, hx)
    directions = 2 if bidirectional else 1
    assert out_fast.dim() == 2 and out_fast.shape[0] == 7
    states = state_fast if isinstance(state_fast, tuple) else (state_fast,)
    for s in states:
        assert s.dim() == 2 and s.shape[0] == 2 * directions


@pytest.mark.parametrize("kind", ["RNN_TANH", "LSTM", "GRU"])
def test_unbatched_equals_batch_of_one(kind):
    torch.manual_seed(21)
    _, fast = make_pair(kind, 5, 24, num_layers=2, bidirectional=True)
    x = torch.randn(7, 5, dtype=torch.float64)
    hx = random_hx(fast, 1, batched=False)
    out, state = fast(x, hx)
    hx_batched = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
    out_b, state_b = fast(x.unsqueeze(1), hx_batched)
    torch.testing.assert_close(out, out_b[:, 0], rtol=0, atol=0)
    for s, s_b in zip(state if isinstance(state, tuple) else (state,), state_b if isinstance(state_b, tuple) else (state_b,)):
        torch.testing.assert_close(s, s_b[:, 0], rtol=0, atol=0)
