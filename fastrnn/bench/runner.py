"""Run the benchmark: per configuration, build torch.nn and every selected implementation with
the same weights, inputs and dtype, check each against the float64 reference, then time
inference (forward under ``no_grad``) and training (forward + backward) in interleaved rounds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from . import cudnn_heuristic, flops, peers
from .presets import Config
from .timing import Timer, rotation_count, summarize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TORCH = "torch.nn"
# "torch" names fastrnn's backend of torch's own kernels (fastrnn:torch); torch.nn is "torch.nn".
TORCH_ALIASES = ("torch.nn", "cudnn")
AUTO = "auto"  # fastrnn as a user gets it: backend="auto"
MODES = ("inference", "training")
MIN_SAMPLES = 3  # timed samples per row even when the time budget is spent


@dataclass(frozen=True)
class Impl:
    name: str  # "torch.nn", "fastrnn:reference", "flashrnn", ...
    kind: str  # "torch" | "fastrnn" | "peer"
    backend: Optional[str] = None


def known_names() -> List[str]:
    import fastrnn

    return list(TORCH_ALIASES) + [AUTO] + list(fastrnn.registered_backends()) + list(peers.PEERS)


def select_impls(requested: Optional[List[str]]) -> tuple:
    """-> (impls, notes). ``requested`` None means everything available. Names must be known
    (the CLI checks that); an unavailable backend is skipped with a note."""
    import fastrnn
    from fastrnn import backends

    names = requested if requested is not None else [TORCH, AUTO] + fastrnn.registered_backends() + list(peers.PEERS)
    impls, notes, wanted_peers = [], [], []
    for name in names:
        if name in TORCH_ALIASES:
            impl = Impl(TORCH, "torch")
        elif name in peers.PEERS:
            wanted_peers.append(name)
            continue
        elif name == AUTO:
            impl = Impl(f"fastrnn:{AUTO}", "fastrnn", AUTO)
        else:
            why = backends.get_backend(name).unavailable()
            if why is not None:
                notes.append(f"fastrnn backend {name!r} unavailable here: {why}; skipped")
                continue
            impl = Impl(f"fastrnn:{name}", "fastrnn", name)
        if impl not in impls:
            impls.append(impl)
    run_peers, peer_notes = peers.detect(wanted_peers)
    impls += [Impl(name, "peer") for name in run_peers]
    return impls, notes + peer_notes


# ------------------------------------------------------------------------------------ building

def torch_module(config: Config, device, dtype) -> nn.Module:
    kwargs = dict(num_layers=config.layers, bidirectional=config.bidirectional)
    if config.cell == "lstm":
        m = nn.LSTM(config.input_size, config.hidden_size, **kwargs)
    elif config.cell == "gru":
        m = nn.GRU(config.input_size, config.hidden_size, **kwargs)
    else:
        m = nn.RNN(config.input_size, config.hidden_size, nonlinearity=config.cell[4:], **kwargs)
    return m.to(device=device, dtype=dtype)


def fastrnn_module(config: Config, backend: str, state: dict, device, dtype) -> nn.Module:
    import fastrnn

    kwargs = dict(num_layers=config.layers, bidirectional=config.bidirectional, backend=backend,
                  device=device, dtype=dtype)
    if config.cell == "lstm":
        m = fastrnn.LSTM(config.input_size, config.hidden_size, **kwargs)
    elif config.cell == "gru":
        m = fastrnn.GRU(config.input_size, config.hidden_size, **kwargs)
    else:
        m = fastrnn.RNN(config.input_size, config.hidden_size, nonlinearity=config.cell[4:], **kwargs)
    m.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    return m


def unsupported_reason(config: Config, backend: str, device, dtype) -> Optional[str]:
    """Ask the backend about every layer-direction's problem (the same as the module would);
    ``auto`` runs everything (on some backend)."""
    from fastrnn import backends
    from fastrnn.backends import LayerProblem
    from fastrnn.cells import get_cell

    if backend == AUTO:
        return None
    b = backends.get_backend(backend)
    directions = 2 if config.bidirectional else 1
    for layer in range(config.layers):
        problem = LayerProblem(
            cell=get_cell(config.cell), device=device, dtype=dtype,
            input_size=config.input_size if layer == 0 else config.hidden_size * directions,
            hidden_size=config.hidden_size, proj_size=0, batch_size=config.batch,
            seq_len=config.seq_len, has_bias=True, has_lengths=False)
        why = b.unsupported(problem)
        if why is not None:
            return why
    return None


class Inputs:
    """Rotated input buffers, initial state and output gradient, all in the benchmark dtype."""

    def __init__(self, config: Config, device, dtype, rotation: int, generator: torch.Generator):
        def randn(*shape, scale=1.0):
            return (torch.randn(*shape, generator=generator) * scale).to(device=device, dtype=dtype)

        T, B, I, H = config.seq_len, config.batch, config.input_size, config.hidden_size
        states = config.layers * (2 if config.bidirectional else 1)
        self.xs = [randn(T, B, I) for _ in range(rotation)]
        self.h0 = randn(states, B, H, scale=0.5)
        self.c0 = randn(states, B, H, scale=0.5) if config.cell == "lstm" else None
        self.gout = randn(T, B, H * (2 if config.bidirectional else 1))

    def hx(self, h0=None, c0=None):
        h0 = self.h0 if h0 is None else h0
        c0 = self.c0 if c0 is None else c0
        return (h0, c0) if self.c0 is not None else h0


# ---------------------------------------------------------------------------------- correctness

def rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    """|value - ref|max / |ref|max, in float64 (inf when value has NaN/inf)."""
    value = value.detach().to(device=ref.device, dtype=torch.float64)
    diff = (value - ref).abs().max().item()
    scale = ref.abs().max().item()
    if diff != diff:  # NaN
        return float("inf")
    return diff / scale if scale > 0 else diff


def forward_backward(module, x, hx, gout):
    """One training step on fresh leaves; returns (out, {grad name: grad})."""
    x = x.detach().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out = module(x, hx)[0]
    out.backward(gout)
    grads = {"input": x.grad}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return out.detach(), grads


def reference_result(config: Config, state: dict, inputs: Inputs, device) -> dict:
    """Output and gradients of the float64 reference backend on the benchmark's (rounded) data."""
    f64 = torch.float64
    module = fastrnn_module(config, "reference", {k: v.to(f64) for k, v in state.items()}, device, f64)
    hx = inputs.hx(inputs.h0.to(f64), inputs.c0.to(f64) if inputs.c0 is not None else None)
    out, grads = forward_backward(module, inputs.xs[0].to(f64), hx, inputs.gout.to(f64))
    return {"out": out, "grads": grads}


def tolerance(dtype: str, tf32: bool) -> float:
    """Relative error budget (design.md §6): fp32 1e-4 (TF32 5e-3), bf16/fp16 1e-2; a row also
    passes when it is within 2x torch.nn's own error in the same dtype."""
    if dtype == "float32":
        return 5e-3 if tf32 else 1e-4
    return 1e-2


# ------------------------------------------------------------------------------------ the run

def _tf32_applies(impl: Impl, config: Config, device_info: dict) -> bool:
    if device_info["type"] != "cuda" or config.dtype != "float32" or device_info["capability"][0] < 8:
        return False
    if impl.kind == "torch":
        return bool(torch.backends.cudnn.allow_tf32)
    return bool(torch.backends.cuda.matmul.allow_tf32)


def run_config(config: Config, impls: List[Impl], device: torch.device, device_info: dict,
               repeats: int, warmup: int, check_errors: bool = True, seed: int = 0,
               time_budget_s: Optional[float] = None) -> tuple:
    """Measure one configuration. Returns (rows, skipped) where skipped lists
    {"impl", "reason"} for implementations that could not run it.

    ``time_budget_s`` bounds the timed rounds of this configuration (half per mode): once it is
    spent and every implementation has ``MIN_SAMPLES`` samples, sampling stops early (each row's
    ``samples`` says how many it got)."""
    dtype = DTYPES[config.dtype]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reference_module = torch_module(config, "cpu", torch.float32)  # init on the CPU: same on any device
    state = {k: v.to(dtype) for k, v in reference_module.state_dict().items()}  # rounded once
    x_bytes = config.seq_len * config.batch * config.input_size * torch.tensor([], dtype=dtype).element_size()
    rotation = rotation_count(device, x_bytes, device_info.get("l2_cache_bytes"))
    inputs = Inputs(config, device, dtype, rotation, gen)
    timer = Timer(device)

    modules: Dict[Impl, nn.Module] = {}
    skipped = []
    for impl in impls:
        try:
            if impl.kind == "torch":
                m = torch_module(config, device, dtype)
                m.load_state_dict(state)
            elif impl.kind == "fastrnn":
                why = unsupported_reason(config, impl.backend, device, dtype)
                if why is not None:
                    skipped.append({"impl": impl.name, "reason": f"unsupported: {why}"})
                    continue
                m = fastrnn_module(config, impl.backend, state, device, dtype)
            else:  # a peer gets torch.nn's module with the same weights to convert
                m = torch_module(config, device, dtype)
                m.load_state_dict(state)
                m = peers.ADAPTERS[impl.name](m, config, device, dtype)
            modules[impl] = m
        except Exception as exc:
            skipped.append({"impl": impl.name, "reason": f"failed to build: {type(exc).__name__}: {exc}"})

    ref = reference_result(config, state, inputs, device) if check_errors and modules else None

    errors: Dict[tuple, dict] = {}
    samples: Dict[tuple, List[float]] = {}
    memory: Dict[tuple, Optional[float]] = {}
    for mode in MODES:
        training = mode == "training"
        steps: Dict[Impl, Callable] = {}
        for impl, m in list(modules.items()):
            m.train(training)
            x0 = inputs.xs[0]
            try:
                # First call: error check against float64; it is also the first warm-up call
                # (Triton compilation, cuDNN plan creation).
                if training:
                    out, grads = forward_backward(m, x0, inputs.hx(), inputs.gout)
                else:
                    with torch.no_grad():
                        out, grads = m(x0, inputs.hx())[0], None
                timer.sync()
                errors[(impl, mode)] = _errors(out, grads, ref)
            except Exception as exc:
                skipped.append({"impl": impl.name, "mode": mode,
                                "reason": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
                continue
            steps[impl] = _step(m, inputs, training)
            samples[(impl, mode)] = []

        # Warm-up (excluded), then interleaved timed rounds.
        failed = set()
        mode_start = time.perf_counter()
        for round_ in range(warmup + repeats):
            if (time_budget_s is not None and round_ >= warmup + min(MIN_SAMPLES, repeats)
                    and time.perf_counter() - mode_start > time_budget_s / len(MODES)):
                break
            for impl, (prepare, step) in steps.items():
                if impl in failed:
                    continue
                try:
                    prepare(round_)  # untimed: drop the previous call's gradients
                    ms = timer(lambda: step(round_))
                except Exception as exc:
                    failed.add(impl)
                    skipped.append({"impl": impl.name, "mode": mode,
                                    "reason": f"failed while timing: {type(exc).__name__}: {exc}"})
                    continue
                if round_ >= warmup:
                    samples[(impl, mode)].append(ms)
        for impl in failed:
            samples.pop((impl, mode), None)
        for impl, (prepare, step) in steps.items():
            if impl not in failed:
                try:
                    prepare(0)
                    memory[(impl, mode)] = _peak_memory_mb(step, device, timer)
                except Exception as exc:  # e.g. out of memory: keep the timings, say why
                    memory[(impl, mode)] = None
                    skipped.append({"impl": impl.name, "mode": mode,
                                    "reason": f"peak memory not measured: {type(exc).__name__}: {exc}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    rows = _rows(config, impls, samples, errors, memory, device_info, rotation, repeats, warmup)
    for row in rows:  # which backend "auto" ran, as explain_backend says
        if row["backend"] == AUTO:
            auto = next(m for impl, m in modules.items() if impl.backend == AUTO)
            row["auto_backend"] = auto.explain_backend(inputs.xs[0]).backend
    return rows, skipped


def _step(module, inputs: Inputs, training: bool) -> tuple:
    """-> (prepare(i), run(i)): ``run`` is the timed call on input buffer ``i % rotation``;
    ``prepare`` (untimed) clears the gradients a previous training call left behind."""
    params = list(module.parameters())
    xs = [x.detach().requires_grad_(True) for x in inputs.xs] if training else inputs.xs
    hx, gout = inputs.hx(), inputs.gout

    def nothing(i: int) -> None:
        pass

    def infer(i: int) -> None:
        with torch.no_grad():
            module(xs[i % len(xs)], hx)

    def clear(i: int) -> None:
        xs[i % len(xs)].grad = None
        for p in params:
            p.grad = None

    def train(i: int) -> None:
        module(xs[i % len(xs)], hx)[0].backward(gout)

    return (clear, train) if training else (nothing, infer)


def _peak_memory_mb(step, device, timer) -> Optional[float]:
    if device.type != "cuda":
        return None
    timer.sync()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step(0)
    timer.sync()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _errors(out, grads, ref) -> dict:
    if ref is None:
        return {"max_rel_err_out": None, "max_rel_err_grad": None, "grad_errors": None}
    result = {"max_rel_err_out": rel_err(out, ref["out"]), "max_rel_err_grad": None, "grad_errors": None}
    if grads is not None:
        per = {}
        for name, g_ref in ref["grads"].items():
            g = grads.get(name)
            per[name] = float("inf") if g is None else rel_err(g, g_ref)
        result["grad_errors"] = per
        result["max_rel_err_grad"] = max(per.values()) if per else None
    return result


def _rows(config, impls, samples, errors, memory, device_info, rotation, repeats, warmup) -> List[dict]:
    rows = []
    for mode in MODES:
        training = mode == "training"
        count = (flops.training_flops if training else flops.forward_flops)(
            config.cell, config.batch, config.seq_len, config.input_size, config.hidden_size,
            config.layers, config.bidirectional)
        torch_stats = samples.get((Impl(TORCH, "torch"), mode))
        torch_median = summarize(torch_stats)["median_ms"] if torch_stats else None
        torch_err = errors.get((Impl(TORCH, "torch"), mode), {})
        path = cudnn_heuristic.torch_path(config, device_info, training)
        for impl in impls:
            if (impl, mode) not in samples:
                continue
            stats = summarize(samples[(impl, mode)])
            err = errors[(impl, mode)]
            tf32 = _tf32_applies(impl, config, device_info)
            tol = tolerance(config.dtype, tf32)
            worst = max([e for e in (err["max_rel_err_out"], err["max_rel_err_grad"]) if e is not None],
                        default=None)
            torch_worst = max([e for e in (torch_err.get("max_rel_err_out"), torch_err.get("max_rel_err_grad"))
                               if e is not None], default=None)
            median = stats["median_ms"]
            row = dict(config.as_dict())
            row.update(
                impl=impl.name,
                impl_kind=impl.kind,
                backend=impl.backend,
                mode=mode,
                **stats,
                warmup=warmup,
                input_buffers=rotation,
                us_per_step=median * 1e3 / config.seq_len,
                speedup_vs_torch=(torch_median / median) if torch_median and median > 0 else None,
                flops=count,
                tflops=count / (median * 1e-3) / 1e12 if median > 0 else None,
                peak_mem_mb=memory.get((impl, mode)),
                peak_mem_method=("torch.cuda.max_memory_allocated during one call, minus memory "
                                 "allocated before it" if device_info["type"] == "cuda"
                                 else "not measured on the CPU (null)"),
                **err,
                error_vs_torch=(worst / torch_worst) if worst is not None and torch_worst else None,
                error_tolerance=tol,
                error_ok=None if worst is None else bool(
                    worst <= tol or (impl.kind != "torch" and torch_worst is not None and worst <= 2 * torch_worst)),
                tf32=tf32,
                torch_nn_path=path,
            )
            rows.append(row)
    return rows


def progress(index: int, total: int, config: Config, started: float, stream=sys.stderr) -> None:
    print(f"[{index}/{total}] {config.label()} ... ({time.perf_counter() - started:.0f} s)",
          file=stream, flush=True)


def write_partial(path, metadata: dict, preset: str, rows: List[dict], skipped: List[dict], done: int,
                  total: int) -> None:
    """Writes what is measured so far to the run's JSON file after each configuration, so a run
    stopped part-way (a time limit on a borrowed GPU) still leaves every finished row. The
    finished run overwrites it with the full result; a partial file says ``"partial"``."""
    from . import report

    report.write_json({"schema": "fastrnn-bench/1", "partial": {"configs_done": done, "configs_total": total},
                       "metadata": metadata, "settings": {"preset": preset}, "rows": rows, "skipped": skipped,
                       "notes": [f"partial: {done} of {total} configurations done"]}, path)
