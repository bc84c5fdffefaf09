"""torch.compile of models containing fastrnn layers (reference backend, CPU).

* No graph breaks: every module and cell compiles with ``fullgraph=True`` into exactly one graph
  (counted with ``torch._dynamo.testing.CompileCounter``), whatever way the backend is chosen
  (``backend=`` argument, ``fastrnn.use_backend``, the ``FASTRNN_BACKEND`` variable).
* Same results: outputs, final states and the gradients of the input, the initial states and
  every parameter equal eager mode's (AOTAutograd via ``backend="aot_eager"`` in float64 for all
  configurations; one Inductor run in float32, since Inductor's C++ compile takes tens of seconds
  on a CPU).
* One operator per layer-direction (``fastrnn::rnn_layer``, fastrnn/ops.py): the graph does not
  grow with T, and with ``dynamic=True`` or ``mark_dynamic`` a new T or B runs without recompiling
  (without them: one recompile, after which dynamo marks the changed dimension dynamic).
* PackedSequence input compiles with ``fullgraph=True`` too (fastrnn/traced_packing.py), with and
  without sorted_indices, with and without a given hx.
* Eager mode never calls the operator, so its speed and double backward are unchanged.

The models of tests/tracing_models.py (2-layer LSTM, bidirectional GRU, Elman RNN) run the
dynamic-shape tests.
"""

import pytest
import torch
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from tracing_models import KINDS, make_inputs, make_model

DTYPE = torch.float64
LAYER_OPS = (torch.ops.fastrnn.rnn_layer.default, torch.ops.fastrnn.rnn_layer_recorded.default)
CONFIGS = {
    "rnn_tanh": (fastrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNN, {"nonlinearity": "relu"}),
    "lstm": (fastrnn.LSTM, {}),
    "lstm_proj": (fastrnn.LSTM, {"proj_size": 3}),
    "gru": (fastrnn.GRU, {}),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Tagger(torch.nn.Module):
    """A small model around a fastrnn layer: embedding-like input map, recurrent layers, head."""

    def __init__(self, kind, dtype=DTYPE, **kw):
        super().__init__()
        cls, extra = CONFIGS[kind]
        self.inp = torch.nn.Linear(3, 4, dtype=dtype)
        self.rnn = cls(4, 6, num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, **extra, **kw)
        out = 2 * (extra.get("proj_size") or 6)
        self.head = torch.nn.Linear(out, 2, dtype=dtype)
        self.lstm = cls is fastrnn.LSTM

    def forward(self, x, hx=None):
        y, state = self.rnn(torch.tanh(self.inp(x)), hx)
        h = state[0] if self.lstm else state
        return self.head(y), h, state


def _hx(model, batch, dtype=DTYPE):
    rnn = model.rnn
    h_out = rnn.proj_size or rnn.hidden_size
    h0 = torch.randn(rnn.num_layers * 2, batch, h_out, dtype=dtype, requires_grad=True)
    if rnn.cell.has_cell_state:
        c0 = torch.randn(rnn.num_layers * 2, batch, rnn.hidden_size, dtype=dtype, requires_grad=True)
        return (h0, c0)
    return h0


def _leaves(hx):
    return list(hx) if isinstance(hx, tuple) else [hx]


def _run(fn, model, x, hx):
    """Forward and backward of a fixed random projection of every output; returns everything."""
    y, h, state = fn(x, hx)
    g = torch.Generator().manual_seed(123)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum() + (h * h).sum()
    if isinstance(state, tuple):
        loss = loss + state[1].sin().sum()
    inputs = [x] + _leaves(hx) + list(model.parameters())
    grads = torch.autograd.grad(loss, inputs)
    return [y, h] + list(grads)


def _assert_same(compiled, eager, rtol, atol):
    assert len(compiled) == len(eager)
    for k, (a, b) in enumerate(zip(compiled, eager)):
        assert a.dtype == b.dtype and a.shape == b.shape, k
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"tensor {k}: {m}")


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_modules_compile_to_one_graph_and_match_eager(kind):
    torch.manual_seed(1)
    model = Tagger(kind)
    x = torch.randn(3, 5, 3, dtype=DTYPE, requires_grad=True)
    hx = _hx(model, 3)
    eager = _run(model, model, x, hx)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = _run(torch.compile(model, backend=counter, fullgraph=True), model, x, hx)
    assert counter.frame_count == 1 and counter.op_count > 0  # fullgraph: a break would raise
    _assert_same(compiled, eager, rtol=1e-10, atol=1e-12)


def test_inductor_matches_eager():
    torch.manual_seed(2)
    rnn = fastrnn.LSTM(3, 5, batch_first=True)
    head = torch.nn.Linear(5, 2)

    def fn(x, h0, c0):
        y, (h, c) = rnn(x, (h0, c0))
        return head(y), h, c

    x = torch.randn(2, 4, 3, requires_grad=True)
    h0 = torch.randn(1, 2, 5, requires_grad=True)
    c0 = torch.randn(1, 2, 5, requires_grad=True)
    params = list(rnn.parameters()) + list(head.parameters())

    def run(f):
        y, h, c = f(x, h0, c0)
        loss = (y * torch.arange(y.numel()).view_as(y).cos()).sum() + h.square().sum() + c.sin().sum()
        return [y, h, c] + list(torch.autograd.grad(loss, [x, h0, c0] + params))

    _assert_same(run(torch.compile(fn, fullgraph=True)), run(fn), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell_cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
def test_cells_in_a_decoder_loop(cell_cls):
    """A step-by-step loop over a cell (as in a seq2seq decoder): one graph, same results."""
    torch.manual_seed(3)
    cell = cell_cls(3, 5, dtype=DTYPE)
    out = torch.nn.Linear(5, 3, dtype=DTYPE)

    def decode(x0, state, steps: int = 4):
        x, ys = x0, []
        for _ in range(steps):
            state = cell(x, state)
            h = state[0] if isinstance(state, tuple) else state
            x = torch.tanh(out(h))
            ys.append(x)
        return torch.stack(ys)

    x0 = torch.randn(2, 3, dtype=DTYPE, requires_grad=True)
    h0 = torch.randn(2, 5, dtype=DTYPE, requires_grad=True)
    state = (h0, torch.randn(2, 5, dtype=DTYPE)) if cell_cls is fastrnn.LSTMCell else h0
    counter = CompileCounter()
    torch.compile(decode, backend=counter, fullgraph=True)(x0, state)
    assert counter.frame_count == 1

    def run(f):
        ys = f(x0, state)
        return [ys] + list(torch.autograd.grad(ys.sin().sum(), [x0, h0] + list(cell.parameters())))

    _assert_same(run(torch.compile(decode, backend="aot_eager", fullgraph=True)), run(decode), 1e-10, 1e-12)


def _count_graphs(fn, *args):
    counter = CompileCounter()
    torch.compile(fn, backend=counter, fullgraph=True)(*args)
    return counter.frame_count


def test_backend_selection_does_not_break_the_graph(monkeypatch):
    torch.manual_seed(4)
    x = torch.randn(4, 2, 3)
    named = fastrnn.GRU(3, 5, backend="reference")
    assert _count_graphs(lambda x: named(x)[0], x) == 1
    auto = fastrnn.GRU(3, 5)
    # use_backend around the compiled call (ContextVar.set inside a compiled region is a graph
    # break in torch 2.14, so the block belongs outside it).
    with fastrnn.use_backend("reference"):
        assert _count_graphs(lambda x: auto(x)[0], x) == 1
    torch._dynamo.reset()
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert _count_graphs(lambda x: auto(x)[0], x) == 1


def test_compiled_code_follows_backend_choice(monkeypatch):
    """Dynamo guards on the use_backend() context and on the module's backend attribute: a
    compiled function re-traces when either changes, instead of replaying the old choice. A spy
    backend that negates the reference's output makes the choice visible."""
    from fastrnn.backends import _REGISTRY, Backend
    from fastrnn.reference import reference_layer

    def negated(*args):
        out, h, c = reference_layer(*args)
        return -out, h, c

    monkeypatch.setitem(_REGISTRY, "negated", Backend("negated", priority=-1, run_layer=negated, auto=False))
    torch.manual_seed(8)
    model = fastrnn.GRU(3, 4)
    x = torch.randn(3, 2, 3)
    expected = model(x)[0]
    compiled = torch.compile(lambda x: model(x)[0], backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), expected)
    with fastrnn.use_backend("negated"):
        torch.testing.assert_close(compiled(x), -expected)
    torch.testing.assert_close(compiled(x), expected)
    model.backend = "negated"
    torch.testing.assert_close(compiled(x), -expected)


def test_functional_with_lengths_compiles_without_graph_breaks():
    """Variable lengths as a tensor (the padded + lengths form) stay in one graph."""
    torch.manual_seed(5)
    cell = fastrnn.LSTMCell(3, 5, dtype=DTYPE)
    x = torch.randn(5, 3, 3, dtype=DTYPE, requires_grad=True)
    lengths = torch.tensor([5, 2, 3])

    def f(x, lengths):
        out, (h, c) = fastrnn.functional.lstm_layer(x, None, cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                                    cell.bias_hh, lengths=lengths, reverse=True)
        return out, h, c

    assert _count_graphs(f, x, lengths) == 1

    def run(fn):
        out, h, c = fn(x, lengths)
        loss = out.sin().sum() + h.square().sum() + c.sum()
        return [out, h, c] + list(torch.autograd.grad(loss, [x] + list(cell.parameters())))

    _assert_same(run(torch.compile(f, backend="aot_eager", fullgraph=True)), run(f), 1e-10, 1e-12)


def test_recompilation_automatic_dynamic():
    """Without dynamic=True: one recompile per changed dimension, then it is dynamic."""
    model = fastrnn.LSTM(3, 5, num_layers=2)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for batch in (2, 3, 4, 5):
        compiled(torch.randn(4, batch, 3))
    assert counter.frame_count == 2  # the first, then one with a dynamic batch dimension
    for seq_len in (5, 6, 9, 33):
        compiled(torch.randn(seq_len, 2, 3))
    assert counter.frame_count == 3  # one more, with a dynamic sequence length


def _grad_run(fn, model, inputs):
    """Outputs and the gradients of every input and parameter of a fixed projection of them."""
    inputs = [t if t.requires_grad else t.detach().requires_grad_() for t in inputs]
    outputs = fn(*inputs)
    g = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs)
    return list(outputs) + list(torch.autograd.grad(loss, inputs + list(model.parameters())))


@pytest.mark.parametrize("kind", list(KINDS))
def test_dynamic_shapes_compile_once_and_match_eager(kind):
    model = make_model(kind)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    # Sizes unlike each other and the layer sizes: dynamo's duck shaping gives equal sizes one
    # symbol, so a batch of 3 = input_size would be specialized with it.
    for k, (seq_len, batch) in enumerate(((6, 4), (11, 7), (8, 9))):
        inputs = make_inputs(model, seq_len, batch, seed=seq_len)
        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            _assert_same(_grad_run(compiled, model, inputs), _grad_run(model, model, inputs), 1e-10, 1e-12)
        frames = frames if k else counter.frame_count  # (dynamo may restart its first analysis once)
        assert counter.frame_count == frames


def test_mark_dynamic_accepts_new_lengths_and_batches_without_recompiling():
    model = make_model("lstm_2layer")
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for seq_len, batch in ((6, 4), (9, 7), (16, 11)):
        inputs = make_inputs(model, seq_len, batch)
        marked = [t.clone().requires_grad_() for t in inputs]
        torch._dynamo.mark_dynamic(marked[0], 0)
        for t in marked:
            torch._dynamo.mark_dynamic(t, 1)
        with torch._dynamo.config.patch(error_on_recompile=counter.frame_count > 0):
            _assert_same(_grad_run(compiled, model, marked), _grad_run(model, model, inputs), 1e-10, 1e-12)


def test_graph_does_not_grow_with_sequence_length():
    """One layer operator node per layer-direction, whatever T (compiled statically at each T; a graph
    whose weights want gradients records fastrnn::rnn_layer_recorded, one that does not
    fastrnn::rnn_layer)."""
    model = make_model("gru_bidirectional")
    sizes = []
    for seq_len in (4, 64):
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("eager")
        torch.compile(model, backend=counter, fullgraph=True, dynamic=False)(*make_inputs(model, seq_len, 2))
        (graph,) = counter.graphs
        layer_ops = [n for n in graph.graph.nodes if n.target in LAYER_OPS]
        assert len(layer_ops) == 2
        sizes.append(len(graph.graph.nodes))
    assert sizes[0] == sizes[1]


def test_eager_mode_never_calls_the_operator(monkeypatch):
    """Eager mode keeps the direct path (speed, and double backward on the reference backend)."""
    from fastrnn import ops

    def fail(*args, **kwargs):
        raise AssertionError("eager mode called the fastrnn::rnn_layer operator")

    monkeypatch.setattr(ops, "rnn_layer", fail)
    model = make_model("lstm_2layer")
    x, h0, c0 = (t.requires_grad_() for t in make_inputs(model, 4, 2))
    out, h, c = model(x, h0, c0)
    (gx,) = torch.autograd.grad(out.square().sum() + c.sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.sin().sum(), x)
    assert ggx.abs().sum() > 0


def test_compiled_training_step_matches_eager():
    """A whole optimizer step compiled (forward, backward, clip, SGD) updates like eager mode."""
    torch.manual_seed(7)
    eager_model = Tagger("lstm")
    compiled_model = Tagger("lstm")
    compiled_model.load_state_dict(eager_model.state_dict())
    x = torch.randn(3, 4, 3, dtype=DTYPE)
    target = torch.randn(3, 4, 2, dtype=DTYPE)

    def make_step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x)[0], target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            return loss.detach()

        return step

    eager_step = make_step(eager_model)
    compiled_step = torch.compile(make_step(compiled_model), backend="aot_eager")
    for _ in range(3):
        torch.testing.assert_close(compiled_step(), eager_step(), rtol=1e-10, atol=1e-12)
    for (name, a), b in zip(eager_model.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize(
    "enforce_sorted, given_hx", [(False, False), (True, True)], ids=["sorted_indices-zero_hx", "enforce_sorted-given_hx"]
)
def test_packed_sequence_compiles_to_one_graph_and_matches_eager(enforce_sorted, given_hx):
    """A PackedSequence built outside the compiled region (torch's pack_padded_sequence is itself
    marked not to be traced) compiles with fullgraph=True, matches eager mode, and new lengths
    run without recompiling under dynamic=True."""
    torch.manual_seed(9)
    model = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=DTYPE)

    def f(packed, hx):
        out, (h, c) = model(packed, hx)
        return out.data, h, c

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, backend=counter, fullgraph=True, dynamic=True)
    # B = 6 and T = 7, 9: sizes unlike the layer's (duck shaping, see above).
    for k, lengths in enumerate(([2, 7, 1, 4, 6, 3], [9, 3, 3, 6, 8, 2])):
        lengths = torch.tensor(sorted(lengths, reverse=True) if enforce_sorted else lengths)
        x = torch.randn(6, int(lengths.max()), 3, dtype=DTYPE, requires_grad=True)
        hx = tuple(torch.randn(4, 6, 5, dtype=DTYPE, requires_grad=True) for _ in range(2)) if given_hx else None

        def run(fn):
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=enforce_sorted)
            data, h, c = fn(packed, hx)
            loss = data.sin().sum() + h.square().sum() + c.sum()
            leaves = [x] + (list(hx) if given_hx else []) + list(model.parameters())
            return [data, h, c] + list(torch.autograd.grad(loss, leaves))

        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            _assert_same(run(compiled), run(f), 1e-10, 1e-12)
