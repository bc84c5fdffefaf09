"""The traced operator runs kernel backends too: a model with backend="triton" compiles to one
graph of fastrnn layer operators (fastrnn::rnn_layer_recorded in a training graph), the Triton
kernels launch inside the operator (forward once, backward once: no recompute), and outputs and gradients match the float64
reference to design.md's fp32 bar (relative max error < 1e-4).

Without a GPU the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, set at collection
as in tests/test_triton_backend.py); with one, they run compiled on it.
"""

import torch

from triton_env import DEVICE  # first: sets up Triton's CPU interpreter where there is no GPU

import pytest  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.triton import backend as triton_backend  # noqa: E402


from fastrnn.triton import autograd as triton_autograd  # noqa: E402  (imports Triton)


def _rel(a, b):
    return float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_triton_backend_runs_kernels_inside_the_operator_and_matches_reference():
    torch.manual_seed(0)
    fast = fastrnn.GRU(3, 8, bidirectional=True, backend="triton", device=DEVICE)
    ref = fastrnn.GRU(3, 8, bidirectional=True, backend="reference", dtype=torch.float64, device=DEVICE)
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fast, backend=counter, fullgraph=True, dynamic=True)
    before = dict(triton_autograd.LAUNCHES)
    for seq_len, batch in ((6, 4), (9, 7)):
        x = torch.randn(seq_len, batch, 3, device=DEVICE)
        x32, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
        results = []
        for model, inp in ((compiled, x32), (ref, x64)):
            out, h = model(inp)
            weight = torch.cos(torch.arange(out.numel(), device=DEVICE, dtype=out.dtype)).view_as(out)
            loss = (out * weight).sum() + h.square().sum()
            results.append([out, h] + list(torch.autograd.grad(loss, [inp] + list(model.parameters()))))
        for k, (a, b) in enumerate(zip(*results)):
            assert _rel(a, b) < 1e-4, (seq_len, k, _rel(a, b))
    launches = {kind: triton_autograd.LAUNCHES[kind] - before.get(kind, 0) for kind in triton_autograd.LAUNCHES}
    # 2 shapes x 2 directions: one forward and one backward kernel each (compiled training keeps the
    # forward's graph for the backward: no recompute).
    assert launches.get("forward", 0) == 4 and launches.get("backward", 0) == 4, launches
    nodes = [n for g in counter.graphs for n in g.graph.nodes
             if n.target is torch.ops.fastrnn.rnn_layer_recorded.default]
    assert len(nodes) == 2 and all(n.args[11] == "triton" for n in nodes)
