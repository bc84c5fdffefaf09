"""A fuzzer of hostile input: crafted checkpoints and crafted operator arguments (issue 18).

Two kinds of case, each from a seed:

- ``checkpoint``: a valid fastrnn module (random cell and sizes) whose pickled state is then
  broken the way a crafted file could break it (an attribute of another value, type or range,
  ``_all_weights`` renamed, dropped or repeated, a parameter of another shape or dtype, missing
  or added), saved with ``torch.save`` and loaded with ``torch.load(weights_only=True)``;
  when the load succeeds, a forward on backend ``auto`` (torch's unchecked CPU kernel) and on
  ``reference`` must agree, else both must raise.
- ``live``: the same breakage done to a live module by code (no pickle): its forward on ``auto``
  and on ``reference`` agree or both raise.
- ``operator``: ``torch.ops.fastrnn.rnn_layer`` with valid arguments of which one or two are
  broken (a size off by one, a dtype, the ``meta`` device, a missing bias, lengths outside 0..T,
  a bad cell or backend string). When it returns, its results must equal the float64 reference
  on the same arguments.

Every case must end in a Python exception or a verified answer: never a crash, a hang or a
silent wrong answer. Crashes kill the process, so :func:`run_cases` runs the cases in a child
process that reports each case before running it; a signal or a timeout names the case.

Run by tests/test_fuzz_hostile.py (a small count in CI); more cases:
``FASTRNN_HOSTILE_FUZZ=500 FASTRNN_HOSTILE_SEED=7 pytest tests/test_fuzz_hostile.py``, or
``python tests/hostile_fuzz.py FIRST COUNT`` to run seeds FIRST.. directly.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

CELL_KINDS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU", "LSTMCell", "GRUCell", "RNNCell")
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ checkpoints


def _module(rng, fastrnn, torch):
    kind = rng.choice(CELL_KINDS)
    dtype = rng.choice([torch.float64, torch.float32])
    input_size, hidden = rng.randint(1, 5), rng.randint(2, 6)
    if kind.endswith("Cell"):
        cls = getattr(fastrnn, kind)
        return cls(input_size, hidden, bias=rng.random() < 0.8, dtype=dtype), kind
    kw = dict(num_layers=rng.randint(1, 3), bidirectional=rng.random() < 0.5, bias=rng.random() < 0.8,
              batch_first=rng.random() < 0.3, dtype=dtype)
    if kind == "LSTM":
        if rng.random() < 0.3:
            kw["proj_size"] = rng.randint(1, hidden - 1)
        return fastrnn.LSTM(input_size, hidden, **kw), kind
    if kind == "GRU":
        return fastrnn.GRU(input_size, hidden, **kw), kind
    return fastrnn.RNN(input_size, hidden, nonlinearity="tanh" if kind == "RNN_TANH" else "relu", **kw), kind


def _odd_value(rng, value):
    """A value a crafted file could put where ``value`` was."""
    choices = [0, -1, 1000, 2 ** 40, -(2 ** 40), 2.5, "8", None, True, False, [value], float("nan"), "lstm"]
    if isinstance(value, (int, float)):
        choices += [value + 1, value - 1, value * 2]
    if isinstance(value, bool):
        choices += [not value, 2]
    return rng.choice(choices)


def _break_state(rng, module, torch):
    state = module.__dict__
    params = state["_parameters"]
    attributes = [k for k in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                              "dropout", "bidirectional", "proj_size", "backend", "nonlinearity", "training")
                  if k in state]
    for _ in range(rng.choice([1, 1, 1, 2])):
        how = rng.choice(["attribute", "attribute", "attribute", "names", "shape", "shape", "dtype",
                          "missing", "extra", "mode"])
        if how == "attribute":
            name = rng.choice(attributes)
            state[name] = _odd_value(rng, state[name])
        elif how == "mode":
            state["mode"] = rng.choice(["LSTM", "GRU", "RNN_TANH", "RNN_RELU", "lstm", "", "LSTMX"])
        elif how == "names" and "_all_weights" in state:
            names = state["_all_weights"]
            choice = rng.choice(["drop", "repeat", "swap", "rename"])
            if choice == "drop" and names:
                names.pop(rng.randrange(len(names)))
            elif choice == "repeat" and names:
                names.append(list(names[0]))
            elif choice == "swap" and names and len(names[0]) > 1:
                names[0][0], names[0][1] = names[0][1], names[0][0]
            elif names and names[0]:
                names[0][0] = "weight_ih_l9"
        elif how == "shape" and params:
            name = rng.choice(list(params))
            p = params[name]
            if p is None:
                continue
            shape = list(p.shape)
            axis = rng.randrange(len(shape))
            shape[axis] = max(0, shape[axis] + rng.choice([-1, 1, 7]))
            if rng.random() < 0.2:
                shape = shape + [1]
            params[name] = torch.nn.Parameter(torch.randn(shape, dtype=p.dtype))
        elif how == "dtype" and params:
            name = rng.choice(list(params))
            if params[name] is not None:
                dtype = rng.choice([torch.float16, torch.int64, torch.float32, torch.float64])
                params[name] = torch.nn.Parameter(params[name].detach().to(dtype), requires_grad=dtype.is_floating_point)
        elif how == "missing" and params:
            del params[rng.choice(list(params))]
        elif how == "extra":
            params["weight_ih_l7"] = torch.nn.Parameter(torch.randn(3, 3))


def checkpoint_case(seed: int) -> str:
    import torch
    import fastrnn

    rng = random.Random(seed)
    torch.manual_seed(seed)
    module, kind = _module(rng, fastrnn, torch)
    _break_state(rng, module, torch)
    buffer = io.BytesIO()
    try:
        torch.save(module, buffer)
    except Exception:  # a broken state pickle refuses to write: no file to attack with
        return "unsaveable"
    buffer.seek(0)
    rng_state = torch.get_rng_state()
    try:
        loaded = torch.load(buffer, weights_only=True)
    except Exception:
        loaded = None
    assert torch.equal(rng_state, torch.get_rng_state()), "torch.load changed the global RNG state"
    if loaded is None:
        return "refused at load"
    assert type(loaded) is type(module), type(loaded)
    return _forward_agrees(loaded, kind, _input(loaded, kind, torch), torch)


def live_case(seed: int) -> str:
    """The same breakage on a live module (code setting attributes or parameters), no pickle:
    the forward must raise on both backends or agree."""
    import torch
    import fastrnn

    rng = random.Random(seed)
    torch.manual_seed(seed)
    module, kind = _module(rng, fastrnn, torch)
    _break_state(rng, module, torch)
    try:
        x = _input(module, kind, torch)
    except Exception:
        return "no input fits"  # e.g. input_size is no longer a size
    # Code can set what no load would accept (training=2, bias=None): a backend may refuse what
    # another runs; what must not happen is a crash, or two answers that differ.
    return _forward_agrees(module, kind, x, torch, both_or_neither=False)


def _input(module, kind, torch):
    weight = module.weight_ih if kind.endswith("Cell") else module.weight_ih_l0
    shape = (3, module.input_size) if kind.endswith("Cell") else (4, 3, module.input_size)
    return torch.randn(shape, dtype=weight.dtype)


def _forward_agrees(module, kind, x, torch, both_or_neither=True):
    """auto (torch's kernel on the CPU) and the reference agree, or both raise (or, without
    ``both_or_neither``, either raises)."""
    dtype = x.dtype
    results = {}
    for backend in ("auto", "reference"):
        with fastrnn_backend(backend):
            try:
                out = module(x)
            except Exception as e:
                results[backend] = type(e)
                continue
        results[backend] = [t.detach().double() for t in _flat(out)]
    a, b = results["auto"], results["reference"]
    if isinstance(a, type) or isinstance(b, type):
        if isinstance(a, type) and isinstance(b, type):
            return "refused at forward"
        assert not both_or_neither, f"one backend ran, the other raised: {a} vs {b}"
        return "refused at forward by one backend"
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape, (u.shape, v.shape)
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        assert torch.allclose(u, v, rtol=tol, atol=tol), (u - v).abs().max()
    return "ran and agreed"


def fastrnn_backend(name):
    import fastrnn

    return fastrnn.use_backend(name)


def _flat(value):
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return [value]


# ------------------------------------------------------------------------------ operator arguments


def operator_case(seed: int) -> str:
    import torch
    import fastrnn
    from fastrnn.cells import get_cell

    rng = random.Random(seed)
    torch.manual_seed(seed)
    name = rng.choice(["lstm", "gru", "rnn_tanh", "rnn_relu"])
    cell = get_cell(name)
    T, B, I, H = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 4), rng.randint(2, 5)
    P = rng.randint(1, H - 1) if name == "lstm" and rng.random() < 0.3 else 0
    H_out, G = P or H, cell.num_gates
    dtype = rng.choice([torch.float64, torch.float32])
    args = {
        "x": torch.randn(T, B, I, dtype=dtype), "h0": torch.randn(B, H_out, dtype=dtype),
        "c0": torch.randn(B, H, dtype=dtype) if cell.has_cell_state else None,
        "weight_ih": torch.randn(G * H, I, dtype=dtype), "weight_hh": torch.randn(G * H, H_out, dtype=dtype),
        "bias_ih": torch.randn(G * H, dtype=dtype), "bias_hh": torch.randn(G * H, dtype=dtype),
        "weight_hr": torch.randn(P, H, dtype=dtype) if P else None,
        "lengths": torch.randint(0, T + 1, (B,)) if rng.random() < 0.5 else None,
    }
    strings = {"cell": name, "reverse": rng.random() < 0.5, "backend": rng.choice(["auto", "reference", "torch"])}
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        _break_argument(rng, args, strings, torch)
    order = ("x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "lengths")
    try:
        out, h, c = torch.ops.fastrnn.rnn_layer(strings["cell"], *(args[k] for k in order), strings["reverse"],
                                                strings["backend"])
    except Exception:
        return "refused"
    # It ran: the arguments were valid, and the result must be the float64 reference's.
    double = {k: None if v is None else (v.double() if v.is_floating_point() else v) for k, v in args.items()}
    ref = fastrnn.functional.rnn_layer(get_cell(strings["cell"]), *(double[k] for k in order[:-1]),
                                       lengths=double["lengths"], reverse=strings["reverse"], backend="reference")
    tol = 1e-10 if args["x"].dtype == torch.float64 else 1e-4
    for got, want in zip((out, h, c), ref):
        if want is None:
            assert got.numel() == 0
            continue
        assert got.shape == want.shape, (got.shape, want.shape)
        assert torch.allclose(got.double(), want, rtol=tol, atol=tol), (got.double() - want).abs().max()
    return "ran and agreed"


def _break_argument(rng, args, strings, torch):
    what = rng.choice(["size", "size", "size", "dtype", "meta", "bias", "lengths", "lengths", "string", "none",
                       "dims"])
    tensors = [k for k, v in args.items() if v is not None]
    if what == "size":
        k = rng.choice(tensors)
        shape = list(args[k].shape)
        if shape:
            axis = rng.randrange(len(shape))
            shape[axis] = max(0, shape[axis] + rng.choice([-1, 1, 3]))
        args[k] = _like(args[k], shape, torch)
    elif what == "dims":
        k = rng.choice(tensors)
        args[k] = args[k].reshape(-1) if rng.random() < 0.5 else args[k][None]
    elif what == "dtype":
        k = rng.choice(tensors)
        args[k] = args[k].to(rng.choice([torch.float16, torch.float32, torch.float64, torch.int32, torch.bool]))
    elif what == "meta":
        k = rng.choice(tensors)
        args[k] = args[k].to("meta")
    elif what == "bias":
        args[rng.choice(["bias_ih", "bias_hh"])] = None
    elif what == "lengths":
        B, T = args["x"].shape[1], args["x"].shape[0]
        args["lengths"] = torch.tensor([rng.choice([-1, T + 1, 2 ** 31, -(2 ** 40), 0, T]) for _ in range(B)])
        if rng.random() < 0.3:
            args["lengths"] = args["lengths"].to(rng.choice([torch.int8, torch.float32, torch.int32]))
    elif what == "string":
        key = rng.choice(["cell", "backend"])
        strings[key] = rng.choice(["", "LSTM", "gru", "bogus", "triton", "cuda", "reference", "lstm\x00"])
    else:
        k = rng.choice(["h0", "c0", "weight_hr", "weight_ih"])
        if k == "c0" and args["c0"] is None:
            args["c0"] = torch.randn(args["x"].shape[1], 3)
        elif k == "weight_hr" and args["weight_hr"] is None:
            args["weight_hr"] = torch.randn(2, 2, dtype=args["x"].dtype)
        elif k in ("h0", "weight_ih"):
            args[k] = torch.randn(0, dtype=args["x"].dtype)
        else:
            args[k] = None


def _like(t, shape, torch):
    if t.is_floating_point():
        return torch.randn(shape, dtype=t.dtype)
    return torch.randint(0, 3, shape, dtype=t.dtype)


# ------------------------------------------------------------------------------ running them


CASES = {"checkpoint": checkpoint_case, "operator": operator_case, "live": live_case}


def _child(first: int, count: int) -> None:
    """Run seeds first..first+count-1, alternating kinds; report each before it runs."""
    for seed in range(first, first + count):
        kind = ("checkpoint", "operator", "live")[seed % 3]
        print(f"start {kind} {seed}", flush=True)
        outcome = CASES[kind](seed)
        print(f"done {kind} {seed} {outcome}", flush=True)


def run_cases(first: int, count: int, timeout: float):
    """Run the cases in a child process; -> (returncode, stdout, stderr, last case started)."""
    env = dict(os.environ)
    env.pop("FASTRNN_BACKEND", None)  # auto: torch's own kernels, the unchecked ones on the CPU
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, __file__, str(first), str(count)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=REPO)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, err = "timeout", (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    started = [line for line in out.splitlines() if line.startswith("start ")]
    return code, out, err, started[-1] if started else None


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    _child(int(sys.argv[1]), int(sys.argv[2]))
