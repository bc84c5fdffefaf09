"""fastrnn as a user gets it (``backend="auto"``) against torch.nn, side by side in one process.

The rule it checks: ``auto`` is never slower than torch.nn. For each configuration (the issue's
CPU set: LSTM, GRU and Elman at B in {1, 16, 64}, I=H=128, T=64, a 2-layer bidirectional stack
and a packed batch) it times torch.nn and fastrnn with the same weights and inputs, alternating
the two call by call, and reports the median time of each and the ratio torch.nn / fastrnn
(>= 1: fastrnn is at least as fast), for inference (``no_grad``) and training (forward +
backward). Outputs are checked equal to torch.nn's first.

Batch-1 steps (RL rollouts, streaming inference call a cell or a layer one step at a time): each
cell (LSTMCell, GRUCell, RNNCell) and each single-step layer (T=1) at B=1, H in {32, 64, 256},
inference, where the per-call Python work (checks, the backend decision) is a large part of the
time. Blocks of ``--block`` calls alternate between the two in one process (torch.nn first in
even rounds, fastrnn first in odd ones), each block timed by the CPU time of this process
(``time.process_time_ns``: time the process is descheduled does not count); a block's time
over its calls is one sample of the per-call time. Per row it reports the median and the 10th
percentile of each side's samples. The verdict (the ``ratio`` column and JSON field, and the
lowest ratio printed at the end) is torch.nn's 10th percentile over fastrnn's: on a shared
machine another process's work only ever adds time (cache and memory-bandwidth contention,
frequency changes), in bursts that hit one side's blocks and not the other's, so the median
moves with the load of the moment while the low percentile, the cost with the least
interference, is what repeats from run to run; the median ratio is printed beside it
(``median ratio``) so a difference between the two is visible. The load average before and
after is in the JSON.
    python bench/auto_vs_torch.py                 # all configurations, 1 thread
    python bench/auto_vs_torch.py --repeats 201 --threads 2 --json out.json
    python bench/auto_vs_torch.py --only steps    # the batch-1 step rows only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fastrnn  # noqa: E402
from fastrnn.bench.environment import cpu_name, git_commit  # noqa: E402

CLASSES = {"lstm": (nn.LSTM, fastrnn.LSTM, {}), "gru": (nn.GRU, fastrnn.GRU, {}),
           "rnn_tanh": (nn.RNN, fastrnn.RNN, {})}


def configs():
    for cell in CLASSES:
        for batch in (1, 16, 64):
            yield dict(cell=cell, batch=batch, layers=1, bidirectional=False, packed=False)
    for cell in CLASSES:
        yield dict(cell=cell, batch=16, layers=2, bidirectional=True, packed=False)
        yield dict(cell=cell, batch=16, layers=1, bidirectional=False, packed=True)


def build(config, size=128):
    torch_cls, fast_cls, extra = CLASSES[config["cell"]]
    kw = dict(num_layers=config["layers"], bidirectional=config["bidirectional"], **extra)
    ref = torch_cls(size, size, **kw)
    fast = fast_cls(size, size, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def make_input(config, seq_len=64, size=128, generator=None):
    x = torch.randn(seq_len, config["batch"], size, generator=generator)
    if not config["packed"]:
        return x
    lengths = torch.randint(1, seq_len + 1, (config["batch"],), generator=generator)
    lengths[0] = seq_len
    return pack_padded_sequence(x, lengths, enforce_sorted=False)


def _data(output):
    return output.data if hasattr(output, "batch_sizes") else output


def check_equal(ref, fast, x):
    out_r, _ = ref(x)
    out_f, _ = fast(x)
    torch.testing.assert_close(_data(out_f), _data(out_r), rtol=0, atol=0)


def time_pair(ref, fast, x, training: bool, repeats: int, warmup: int):
    """Alternate ref/fast calls; -> (median ms ref, median ms fast)."""
    times = {"ref": [], "fast": []}
    modules = {"ref": ref, "fast": fast}
    for m in modules.values():
        m.train(training)

    def call(m):
        if training:
            for p in m.parameters():
                p.grad = None
            _data(m(x)[0]).sum().backward()
        else:
            with torch.no_grad():
                m(x)

    for i in range(warmup + repeats):
        order = ("ref", "fast") if i % 2 == 0 else ("fast", "ref")
        for name in order:
            start = time.perf_counter()
            call(modules[name])
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= warmup:
                times[name].append(elapsed)
    return statistics.median(times["ref"]), statistics.median(times["fast"])


STEP_KINDS = ("LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RNN")
STEP_SIZES = (32, 64, 256)
LOW_PERCENTILE = 10  # the verdict's statistic (see the module docstring)


def percentile(samples, q: float) -> float:
    """The q-th percentile of ``samples`` (linear interpolation between order statistics)."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def step_rows(repeats: int, block: int = 200):
    """One dict per batch-1 step configuration: per-call CPU time (us) of torch.nn and fastrnn,
    median and 10th percentile over ``repeats`` alternating blocks of ``block`` calls each."""
    def per_call(module, x, hx):
        start = time.process_time_ns()
        for _ in range(block):
            module(x, hx)
        return (time.process_time_ns() - start) / block / 1e3

    for size in STEP_SIZES:
        for kind in STEP_KINDS:
            ref, fast = getattr(nn, kind)(size, size), getattr(fastrnn, kind)(size, size)
            fast.load_state_dict(ref.state_dict())
            cell = kind.endswith("Cell")
            x, h = (torch.randn(1, size), torch.randn(1, size)) if cell else (torch.randn(1, 1, size), torch.randn(1, 1, size))
            hx = (h, h.clone()) if kind.startswith("LSTM") else h
            with torch.no_grad():
                for got, want in zip(fastrnn_flat(fast(x, hx)), fastrnn_flat(ref(x, hx))):
                    torch.testing.assert_close(got, want, rtol=0, atol=0)
                backend = fast.explain_backend(x, hx).backend if not cell else None
                per_call(ref, x, hx), per_call(fast, x, hx)  # warm-up
                times = {"ref": [], "fast": []}
                for i in range(repeats):
                    for name in (("ref", "fast") if i % 2 == 0 else ("fast", "ref")):
                        times[name].append(per_call(ref if name == "ref" else fast, x, hx))
            row = dict(kind=kind, hidden_size=size, backend=backend)
            for name, side in (("ref", "torch"), ("fast", "fastrnn")):
                row[f"{side}_median_us"] = statistics.median(times[name])
                row[f"{side}_p{LOW_PERCENTILE}_us"] = percentile(times[name], LOW_PERCENTILE)
            row["median_ratio"] = row["torch_median_us"] / row["fastrnn_median_us"]
            row["ratio"] = row[f"torch_p{LOW_PERCENTILE}_us"] / row[f"fastrnn_p{LOW_PERCENTILE}_us"]
            yield row


def fastrnn_flat(result):
    """The tensors of a cell's or layer's result, in order."""
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in fastrnn_flat(item)]


def label(config):
    s = f"{config['cell']} B={config['batch']}"
    if "hidden_size" in config:
        s += f" H={config['hidden_size']}"
    if config["layers"] > 1:
        s += f" L={config['layers']}"
    if config["bidirectional"]:
        s += " bidir"
    if config["packed"]:
        s += " packed"
    return s


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=51)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    parser.add_argument("--only", choices=("layers", "steps"), default=None,
                        help="only the sequence rows, or only the batch-1 step rows")
    parser.add_argument("--block", type=int, default=200, help="calls per timed block of the batch-1 step rows")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {load_before[0]:.2f}")
    if args.only != "steps":
        print(f"sequences: median of {args.repeats} alternating calls")
        print(f"{'configuration':<26} {'mode':<10} {'torch.nn ms':>12} {'fastrnn ms':>11} {'torch.nn/fastrnn':>17}  backend")
    for config in configs() if args.only != "steps" else ():
        ref, fast = build(config)
        x = make_input(config, generator=generator)
        check_equal(ref, fast, x)
        backend = fast.explain_backend(x).backend
        for training in (False, True):
            t_ref, t_fast = time_pair(ref, fast, x, training, args.repeats, args.warmup)
            mode = "training" if training else "inference"
            row = dict(config, mode=mode, torch_ms=t_ref, fastrnn_ms=t_fast, ratio=t_ref / t_fast, backend=backend)
            rows.append(row)
            print(f"{label(config):<26} {mode:<10} {t_ref:>12.3f} {t_fast:>11.3f} {t_ref / t_fast:>17.3f}  {backend}",
                  flush=True)
    if args.only != "layers":
        p = f"p{LOW_PERCENTILE}"
        print(f"batch-1 steps (inference), CPU time per call (us), {args.repeats} alternating blocks of "
              f"{args.block} calls; ratio = torch.nn {p} / fastrnn {p}")
        print(f"{'configuration':<26} {'mode':<6} {'torch.nn med':>12} {p:>7} {'fastrnn med':>12} {p:>7} "
              f"{'median ratio':>13} {'ratio':>7}")
        for step in step_rows(args.repeats, args.block):
            kind, size = step["kind"], step["hidden_size"]
            row = dict(cell=kind, batch=1, hidden_size=size, seq_len=1, mode="step", layers=1, bidirectional=False,
                       packed=False, torch_ms=step[f"torch_{p}_us"] / 1e3, fastrnn_ms=step[f"fastrnn_{p}_us"] / 1e3,
                       statistic=p, **{k: v for k, v in step.items() if k not in ("kind", "hidden_size")})
            rows.append(row)
            print(f"{kind + f' B=1 H={size}':<26} {'step':<6} {step['torch_median_us']:>12.2f} "
                  f"{step[f'torch_{p}_us']:>7.2f} {step['fastrnn_median_us']:>12.2f} {step[f'fastrnn_{p}_us']:>7.2f} "
                  f"{step['median_ratio']:>13.3f} {step['ratio']:>7.3f}", flush=True)
    worst = min(rows, key=lambda r: r["ratio"])
    print(f"lowest ratio: {worst['ratio']:.3f} ({label(worst)}, {worst['mode']})")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats, "block": args.block,
            **git_commit(), "cpu": cpu_name(), "command": " ".join(sys.argv),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
