"""torch.autocast: fastrnn layers run in the autocast dtype with fp32 master weights.

Under ``torch.autocast(device, dtype)`` every fastrnn layer and cell casts its input, states and
weights to the autocast dtype at the layer boundary (``fastrnn/autocast.py``) and runs
in it, as torch.nn's recurrent layers do under CUDA autocast. So:

* outputs and final states (h_n, and c_n for the LSTM) have the autocast dtype, for every cell,
  with or without given states, with PackedSequence input, and for the cells;
* parameters stay float32 and their gradients are float32 (as are those of float32 inputs and
  initial states);
* results are within the autocast dtype's rounding of the float32 results: relative error
  (max |diff| / max |ref|) below 3e-2 for bfloat16 (unit roundoff 2^-8 = 3.9e-3, a few steps and
  two layers of accumulation) and 1e-2 for float16 (2^-11), twice that for gradients, or else
  no more than twice the error of torch.nn's own layer run in that dtype on the same problem
  (ReLU gradients are exempt: see test_autocast_equals_running_in_the_autocast_dtype);
* autocast gives bit for bit what a copy of the model converted to the autocast dtype gives;
* float64 is left alone (as autocast does), and a model already in bfloat16 stays in it.

bfloat16 runs on the CPU; float16 and bfloat16 on a CUDA GPU (skipped without one).
"""

import copy

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn

CONFIGS = {
    "rnn_tanh": (fastrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNN, {"nonlinearity": "relu"}),
    "lstm": (fastrnn.LSTM, {}),
    "lstm_proj": (fastrnn.LSTM, {"proj_size": 4}),
    "gru": (fastrnn.GRU, {}),
}
TOL = {torch.bfloat16: 3e-2, torch.float16: 1e-2}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def _rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def _states(state):
    return list(state) if isinstance(state, tuple) else [state]


def _leaf(t, dtype=None):
    return t.detach().to(dtype or t.dtype).requires_grad_(t.requires_grad)


def _run(model, inputs, hx, device_type, autocast_dtype):
    """Forward (under autocast when a dtype is given), a fixed loss, the grads of every leaf.
    Returns [out, *final states, *input and state grads, *parameter grads]."""
    packed = isinstance(inputs, PackedSequence)
    leaves = [t for t in [inputs.data if packed else inputs] + _states(hx) if t is not None and t.requires_grad]
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        out, state = model(inputs, hx)
    out_t = out.data if packed else out
    g = torch.Generator().manual_seed(99)
    weights = torch.randn(out_t.shape, generator=g).to(out_t.device)
    loss = (out_t.float() * weights).sum() + sum(s.float().square().sum() for s in _states(state))
    grads = torch.autograd.grad(loss, leaves + list(model.parameters()))
    return [out_t] + _states(state) + list(grads)


def _torch_twin_errors(model, inputs, hx, device_type, dtype):
    """Relative errors of torch.nn's own layer run wholly in ``dtype`` against it in float32, item
    by item as _run returns them: the rounding error that is natural for this dtype and problem
    (with ReLU, rounding can flip which units are active, and gradients move a lot)."""
    cls = {"RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[model.mode]
    extra = {"nonlinearity": model.nonlinearity} if cls is torch.nn.RNN else {}
    if model.proj_size:
        extra["proj_size"] = model.proj_size
    twin = cls(model.input_size, model.hidden_size, model.num_layers, bidirectional=model.bidirectional,
               batch_first=model.batch_first, device=inputs.data.device, **extra)
    twin.load_state_dict(model.state_dict())
    ref = _run(twin, inputs, hx, device_type, None)

    def cast_inputs(dt):
        if isinstance(inputs, PackedSequence):
            return inputs._replace(data=_leaf(inputs.data, dt))
        return _leaf(inputs, dt)

    low_hx = None if hx is None else tuple(_leaf(s, dtype) for s in _states(hx))
    low_hx = low_hx if low_hx is None or isinstance(hx, tuple) else low_hx[0]
    low = _run(twin.to(dtype), cast_inputs(dtype), low_hx, device_type, None)
    return [_rel_err(a, b) for a, b in zip(low, ref)]


def _check(model, inputs, hx, device_type, dtype):
    mixed = _run(model, inputs, hx, device_type, dtype)
    ref = _run(model, inputs, hx, device_type, None)
    n_states = 2 if model.mode == "LSTM" else 1
    n_params = len(list(model.parameters()))
    out, states = mixed[0], mixed[1 : 1 + n_states]
    assert ref[0].dtype == torch.float32
    assert out.dtype == dtype, f"output is {out.dtype}, expected the autocast dtype {dtype}"
    for s in states:
        assert s.dtype == dtype, f"final state is {s.dtype}, expected {dtype}"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for g in mixed[1 + n_states :]:
        assert g.dtype == torch.float32, "gradients of fp32 leaves must be fp32"
    names = ["output"] + [f"state{k}" for k in range(n_states)]
    names += [f"grad of input {k}" for k in range(len(mixed) - len(names) - n_params)]
    names += [f"grad of {name}" for name, _ in model.named_parameters()]
    natural = _torch_twin_errors(model, inputs, hx, device_type, dtype)
    for k, (name, a, b) in enumerate(zip(names, mixed, ref)):
        if k > n_states and model.mode == "RNN_RELU":
            # Rounding flips which ReLU units are active, so gradients can move by tens of percent
            # in bf16 (torch.nn's too, by a different amount on each input). Covered instead by
            # test_autocast_equals_running_in_the_autocast_dtype.
            continue
        bound = TOL[dtype] * (1 if k <= n_states else 2)
        err = _rel_err(a, b)
        assert err < max(bound, 2 * natural[k]), (
            f"{name}: relative error {err:.3g} vs float32; allowed {bound:.3g}, or twice torch.nn's "
            f"own {dtype} error {natural[k]:.3g}"
        )


def _model_and_inputs(kind, device, with_hx, packed):
    torch.manual_seed(0)
    cls, extra = CONFIGS[kind]
    model = cls(5, 12, num_layers=2, bidirectional=True, batch_first=True, device=device, **extra)
    x = torch.randn(4, 6, 5, device=device, requires_grad=True)
    hx = None
    if with_hx:
        h_out = extra.get("proj_size") or 12
        h0 = torch.randn(4, 4, h_out, device=device, requires_grad=True)
        hx = (h0, torch.randn(4, 4, 12, device=device, requires_grad=True)) if cls is fastrnn.LSTM else h0
    inputs = x
    if packed:
        inputs = pack_padded_sequence(x, torch.tensor([6, 2, 5, 1]), batch_first=True, enforce_sorted=False)
    return model, inputs, hx


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_fp32"])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_modules_bf16_autocast_cpu(kind, with_hx, packed):
    model, inputs, hx = _model_and_inputs(kind, "cpu", with_hx, packed)
    _check(model, inputs, hx, "cpu", torch.bfloat16)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_autocast_equals_running_in_the_autocast_dtype(kind):
    """Autocast is exactly the layer run in bf16: the same outputs and states, bit for bit, as a
    bf16 copy of the model on bf16 inputs, and parameter and state gradients equal (in fp32) to
    that copy's bf16 ones."""
    model, x, hx = _model_and_inputs(kind, "cpu", with_hx=True, packed=False)
    mixed = _run(model, x, hx, "cpu", torch.bfloat16)
    low_hx = tuple(_leaf(s, torch.bfloat16) for s in _states(hx))
    low = _run(copy.deepcopy(model).bfloat16(), _leaf(x, torch.bfloat16),
               low_hx if isinstance(hx, tuple) else low_hx[0], "cpu", None)
    assert len(mixed) == len(low)
    n_states = 2 if model.mode == "LSTM" else 1
    x_grad = 1 + n_states  # x feeds both directions: autocast sums their grads in fp32, the
    for k, (a, b) in enumerate(zip(mixed, low)):  # bf16 copy in bf16, so these differ by rounding
        if k == x_grad:
            torch.testing.assert_close(a, b.to(a.dtype), rtol=2e-2, atol=2e-2 * b.abs().max().item())
        else:
            assert torch.equal(a, b.to(a.dtype)), k


@pytest.mark.parametrize("cell_cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
def test_cells_bf16_autocast_cpu(cell_cls):
    torch.manual_seed(1)
    cell = cell_cls(5, 12)
    x = torch.randn(6, 3, 5, requires_grad=True)
    h0 = torch.randn(3, 12, requires_grad=True)
    lstm = cell_cls is fastrnn.LSTMCell

    def run(dtype):
        state = (h0, torch.zeros(3, 12)) if lstm else h0
        hs = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            for t in range(x.shape[0]):  # a few steps, feeding each state into the next step
                state = cell(x[t], state)
                hs.append(state[0] if lstm else state)
        out = torch.stack(hs)
        loss = (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        return out, _states(state), torch.autograd.grad(loss, [x, h0] + list(cell.parameters()))

    out, states, grads = run(torch.bfloat16)
    ref_out, ref_states, ref_grads = run(None)
    assert out.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in states)
    assert all(g.dtype == torch.float32 for g in grads)
    assert _rel_err(out, ref_out) < TOL[torch.bfloat16]
    for g, r in zip(grads, ref_grads):
        assert _rel_err(g, r) < 2 * TOL[torch.bfloat16]


def test_bf16_input_with_fp32_weights_and_states():
    """Under autocast, an input already in bf16 and fp32 initial states mix freely."""
    torch.manual_seed(2)
    model = fastrnn.LSTM(5, 8)
    x = torch.randn(4, 3, 5)
    hx = (torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = model(x.bfloat16(), hx)
    assert out.dtype == h.dtype == c.dtype == torch.bfloat16
    ref, _ = model(x, hx)
    assert _rel_err(out, ref) < TOL[torch.bfloat16]


def test_float64_is_left_alone():
    torch.manual_seed(3)
    model = fastrnn.GRU(5, 8, num_layers=2, dtype=torch.float64)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h = model(x)
    assert out.dtype == h.dtype == torch.float64
    assert torch.equal(out, model(x)[0])


def test_bf16_model_stays_bf16():
    torch.manual_seed(4)
    model = fastrnn.GRU(5, 8, dtype=torch.bfloat16)
    x = torch.randn(4, 3, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h = model(x)
    out.float().sum().backward()
    assert out.dtype == h.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters())
    assert torch.equal(out, model(x)[0])  # same computation as without autocast


def test_autocast_under_torch_compile():
    """Autocast inside a compiled function: one graph, same dtypes and values as eager autocast."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(5)
    model = fastrnn.LSTM(5, 8, num_layers=2, batch_first=True)

    def f(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, (h, c) = model(x)
        return out, h, c

    x = torch.randn(2, 4, 5)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, backend=counter, fullgraph=True)(x)
    eager = f(x)
    assert counter.frame_count == 1
    for a, b in zip(compiled, eager):
        assert a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------- CUDA GPU


def _gpu_backends():
    names = ["reference"]
    if "triton" in fastrnn.registered_backends():
        names.append("triton")
    return names


@CUDA
@pytest.mark.parametrize("backend", _gpu_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_modules_autocast_cuda(kind, dtype, backend):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    if backend != "reference":
        from fastrnn.backends import get_backend

        why = get_backend(backend).unavailable()
        if why:
            pytest.skip(f"backend {backend!r} unavailable: {why}")
    model, inputs, hx = _model_and_inputs(kind, "cuda", with_hx=True, packed=False)
    model.backend = backend
    _check(model, inputs, hx, "cuda", dtype)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_packed_autocast_cuda(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    model, inputs, hx = _model_and_inputs("lstm", "cuda", with_hx=False, packed=True)
    _check(model, inputs, hx, "cuda", dtype)
