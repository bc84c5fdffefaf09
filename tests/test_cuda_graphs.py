"""CUDA graphs: forward + backward of a model with fastrnn layers, captured once with
``torch.cuda.graph`` and replayed on new data, gives what eager mode gives: outputs, final
states and every parameter's gradient. Also ``torch.compile(mode="reduce-overhead")``, which
captures CUDA graphs itself.

Padded input only: PackedSequence input cannot be captured, because packing and unpacking index
with data-dependent boolean masks (a device-to-host sync). Needs a CUDA GPU; skipped otherwise.
"""

import copy

import pytest
import torch

import fastrnn
from fastrnn.backends import get_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (none on this machine)")

LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn_tanh": fastrnn.RNN}


class Model(torch.nn.Module):
    def __init__(self, kind, backend):
        super().__init__()
        self.rnn = LAYERS[kind](8, 32, num_layers=2, bidirectional=True, batch_first=True, backend=backend)
        self.head = torch.nn.Linear(64, 4)

    def forward(self, x, hx=None):
        y, state = self.rnn(x, hx)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(y), h


def _require(backend):
    why = get_backend(backend).unavailable()
    if why:
        pytest.skip(f"backend {backend!r} unavailable: {why}")


def _backends():
    return ["reference"] + (["triton"] if "triton" in fastrnn.registered_backends() else [])


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kind", list(LAYERS))
def test_capture_forward_backward_and_replay(kind, backend):
    _require(backend)
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = Model(kind, backend).to(device)
    eager_model = copy.deepcopy(model)
    static_x = torch.randn(5, 12, 8, device=device)
    loss_weights = torch.randn(5, 12, 4, device=device)

    def loss_fn(y, h):
        return (y * loss_weights).sum() + h.square().sum()

    # Warm up on a side stream (lazy initialisation, Triton compilation, allocator), as the
    # torch.cuda.graphs documentation prescribes, then capture with the grads unset so backward
    # allocates them inside the graph's memory pool and replays overwrite them.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            loss_fn(*model(static_x)).backward()
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y, static_h = model(static_x)
        static_loss = loss_fn(static_y, static_h)
        static_loss.backward()

    for trial in range(3):
        x = torch.randn_like(static_x) * (1 + trial)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        eager_model.zero_grad(set_to_none=True)
        y, h = eager_model(x)
        loss = loss_fn(y, h)
        loss.backward()
        torch.testing.assert_close(static_y, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static_h, h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static_loss, loss, rtol=1e-5, atol=1e-4)
        for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_cells_decoder_loop_in_a_cuda_graph():
    """A step-by-step decoder over a cell, captured and replayed (forward only: inference)."""
    torch.manual_seed(1)
    device = torch.device("cuda")
    cell = fastrnn.LSTMCell(6, 16, device=device)
    out = torch.nn.Linear(16, 6, device=device)
    static_x = torch.randn(4, 6, device=device)

    @torch.no_grad()
    def decode(x):
        state, ys = None, []
        for _ in range(5):
            state = cell(x, state)
            x = torch.tanh(out(state[0]))
            ys.append(x)
        return torch.stack(ys)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            decode(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_ys = decode(static_x)
    for _ in range(2):
        x = torch.randn_like(static_x)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static_ys, decode(x), rtol=1e-5, atol=1e-5)


def test_compile_reduce_overhead_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(2)
    model = Model("lstm", "reference").cuda()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    for trial in range(3):
        x = torch.randn(5, 12, 8, device="cuda")
        y_c, h_c = compiled(x)
        y_e, h_e = model(x)
        torch.testing.assert_close(y_c, y_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(h_c, h_e, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
