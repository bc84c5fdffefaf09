"""This machine's per-step floor of a recurrent layer in inference, beside the `cpu` backend's step.

    flock /tmp/fastrnn-bench.lock python bench/cpu_floor.py [--threads 1] [--rounds 7] [--json F]

The floor of one inference step of a layer (T steps, batch B, input_size = hidden_size = H, G gates)
is what the work costs at this machine's measured peaks, nothing else:

    floor = t_x + t_h + t_gates
    t_x     = 2 B H (G H) / P                 input projection, one GEMM for all steps, per step
    t_h     = max(2 B H (G H) / P,            recurrent product h W_hh^T ...
                  4 G H H / BW(level))        ... which must read W_hh (fp32) every step
    t_gates = B H (n_sig s_sig + n_tanh s_tanh)   gate nonlinearities at the measured rate

P is the measured peak of one thread in GFLOP/s (a large torch.mm: 1024^3 fp32), BW(level) the
read bandwidth of the cache level W_hh lives in: L2 when 4 G H^2 bytes fit the L2s of the
`--threads` cores (`--l2-bytes` per core, 2 MiB on this Xeon), else L3 (a 24 MiB buffer). With
several threads every peak is measured with that many threads (torch parallelises the GEMM, the
sum and the mv), so the floor is the whole team's. Bandwidth is the best of a
vectorised sum and torch.mv over a buffer of that size (both only read it). s_sig and s_tanh are
torch's vectorised sigmoid and tanh per element on an L1-resident tensor. Every term is a lower
bound: the floor ignores the loop, the h exchange and the output writes.

The same run times the `cpu` backend (and torch.nn for the ratio) on each row, 1 step = wall / T,
and prints cpu / floor; the issue's target is within 1.3x. Timing T/4 steps beside T splits each
median into a marginal step (the slope) and a fixed cost per call (Python, checks, launches), so a
row far from the floor says which of the two it is. Timings are medians of `--rounds`
interleaved rounds (cpu, torch.nn, cpu, ...), plus the lowest round.
"""

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch
from torch import nn

import fastrnn
from fastrnn.cpu import isa

GATES = {"GRU": (3, 2, 1), "LSTM": (4, 3, 2), "RNN": (1, 0, 1)}  # (G, sigmoids, tanhs) per unit


def best_rate(fn, repeats, rounds):
    """Seconds per call of fn: (median, low) over rounds of `repeats` calls each."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples), min(samples)


def measure_peaks(rounds, l2_bytes, threads):
    peaks = {}
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    med, low = best_rate(lambda: torch.mm(a, b, out=out), 3, rounds)
    peaks["gflops"] = 2 * n ** 3 / low / 1e9
    peaks["gflops_median"] = 2 * n ** 3 / med / 1e9
    for level, nbytes in (("l2", threads * l2_bytes // 2), ("l3", 24 << 20)):
        buf = torch.randn(nbytes // 4)
        mat = buf.view(-1, 256)
        vec = torch.randn(256)
        rates = []
        for fn, reps in ((lambda: buf.sum(), 20), (lambda: torch.mv(mat, vec), 20)):
            med, low = best_rate(fn, reps, rounds)
            rates.append(nbytes / low / 1e9)
        peaks[f"{level}_gbps"] = max(rates)
        peaks[f"{level}_gbps_by"] = {"sum": rates[0], "mv": rates[1]}
    x = torch.randn(8192 * threads)
    out = torch.empty(8192 * threads)
    for name, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        med, low = best_rate(lambda: fn(x, out=out), 200, rounds)
        peaks[f"{name}_ns_per_elem"] = low / x.numel() * 1e9
    return peaks


def floor_us(cell, batch, hidden, peaks, l2_bytes, threads):
    gates, n_sig, n_tanh = GATES[cell]
    flops = 2 * batch * hidden * gates * hidden
    w_bytes = 4 * gates * hidden * hidden
    level = "l2" if w_bytes <= threads * l2_bytes else "l3"
    t_x = flops / (peaks["gflops"] * 1e3)
    t_h = max(flops / (peaks["gflops"] * 1e3), w_bytes / (peaks[f"{level}_gbps"] * 1e3))
    t_g = batch * hidden * (n_sig * peaks["sigmoid_ns_per_elem"] + n_tanh * peaks["tanh_ns_per_elem"]) / 1e3
    return {"floor_us": t_x + t_h + t_g, "input_us": t_x, "recurrent_us": t_h, "gates_us": t_g,
            "w_hh_level": level}


def time_layers(cell, batch, hidden, seq_len, rounds):
    """us per step of cpu and torch.nn at T=seq_len (median, lowest), and each one's marginal step
    (the slope between T/4 and T steps: the step without the fixed cost of a call) and that cost."""
    torch.manual_seed(0)
    theirs = getattr(nn, cell)(hidden, hidden)
    ours = getattr(fastrnn, cell)(hidden, hidden, backend="cpu")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(seq_len, batch, hidden)
    short = x[: max(1, seq_len // 4)]
    times = {(name, n): [] for name in ("cpu", "torch.nn") for n in (seq_len, short.shape[0])}
    with torch.no_grad():
        ref = theirs.double()(x.double())[0]
        theirs.float()
        err = ((ours(x)[0].double() - ref).abs().max() / ref.abs().max()).item()
        assert err < 1e-4, f"{cell} B={batch} H={hidden}: cpu backend error {err:.2e} vs float64"
        for k in range(rounds + 1):
            for name, module in (("cpu", ours), ("torch.nn", theirs)):
                for inp in (x, short):
                    start = time.perf_counter()
                    module(inp)
                    if k:
                        times[(name, inp.shape[0])].append((time.perf_counter() - start) * 1e6)
    result = {}
    for name in ("cpu", "torch.nn"):
        full, part = times[(name, seq_len)], times[(name, short.shape[0])]
        result[name] = {"median_us": statistics.median(full) / seq_len, "low_us": min(full) / seq_len}
        if short.shape[0] < seq_len:
            slope = (statistics.median(full) - statistics.median(part)) / (seq_len - short.shape[0])
            result[name]["marginal_us"] = slope
            result[name]["call_us"] = statistics.median(full) - slope * seq_len
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="GRU,RNN,LSTM", help="comma list of GRU, RNN (Elman tanh), LSTM")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--l2-bytes", type=int, default=2 << 20)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    peaks = measure_peaks(args.rounds, args.l2_bytes, args.threads)
    print(f"torch {torch.__version__}, cpu ISA {isa.current()}, {args.threads} thread(s), load {' '.join(load_before)}")
    print("peaks: {gflops:.1f} GFLOP/s (median {gflops_median:.1f}), L2 {l2_gbps:.1f} GB/s, "
          "L3 {l3_gbps:.1f} GB/s, sigmoid {sigmoid_ns_per_elem:.3f} ns, tanh {tanh_ns_per_elem:.3f} ns"
          .format(**peaks), "| bandwidth by sum / mv:", peaks["l2_gbps_by"], peaks["l3_gbps_by"])
    rows = []
    print(f"{'cell':5s} {'B':>3s} {'H':>4s} {'W_hh':>4s} {'input':>7s} {'recur':>7s} {'gates':>7s} "
          f"{'floor':>7s} {'cpu':>8s} {'cpu low':>8s} {'torch.nn':>8s} {'cpu/floor':>9s} {'torch/cpu':>9s} "
          f"{'cpu step':>8s} {'/floor':>9s} {'cpu call':>8s} {'torch call':>8s}\n"
          "(us per step; step: the marginal step, T/4 -> T; call: the fixed cost of one call, us)")
    cells = [cell.strip().upper() for cell in args.cells.split(",")]
    unknown = [cell for cell in cells if cell not in GATES]
    if unknown:
        parser.error(f"--cells: expected a comma list of {', '.join(GATES)}, got {', '.join(unknown)}")
    for cell in cells:
        for batch in map(int, args.batches.split(",")):
            for hidden in map(int, args.sizes.split(",")):
                fl = floor_us(cell, batch, hidden, peaks, args.l2_bytes, args.threads)
                t = time_layers(cell, batch, hidden, args.seq_len, args.rounds)
                row = {"cell": cell, "batch": batch, "hidden": hidden, **fl, **{
                    f"{k}_{m}": v[m] for k, v in t.items() for m in ("median_us", "low_us", "marginal_us", "call_us") if m in v}}
                row["cpu_over_floor"] = row["cpu_median_us"] / fl["floor_us"]
                row["cpu_low_over_floor"] = row["cpu_low_us"] / fl["floor_us"]
                row["torch_over_cpu"] = row["torch.nn_median_us"] / row["cpu_median_us"]
                marginal = row.get("cpu_marginal_us", float("nan"))
                row["cpu_marginal_over_floor"] = marginal / fl["floor_us"]
                rows.append(row)
                print(f"{cell:5s} {batch:3d} {hidden:4d} {fl['w_hh_level']:>4s} {fl['input_us']:7.2f} "
                      f"{fl['recurrent_us']:7.2f} {fl['gates_us']:7.2f} {fl['floor_us']:7.2f} "
                      f"{row['cpu_median_us']:8.2f} {row['cpu_low_us']:8.2f} {row['torch.nn_median_us']:8.2f} "
                      f"{row['cpu_over_floor']:8.2f}x {row['torch_over_cpu']:8.2f}x {marginal:8.2f} {row['cpu_marginal_over_floor']:8.2f}x "
                      f"{row.get('cpu_call_us', float('nan')):8.1f} {row.get('torch.nn_call_us', float('nan')):8.1f}", flush=True)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    print(f"load after: {' '.join(load_after)}")
    if args.json:
        with open(args.json, "w") as f:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
            json.dump({"commit": commit, "torch": torch.__version__, "threads": args.threads, "seq_len": args.seq_len,
                       "machine": platform.processor() or platform.machine(),
                       "isa": isa.current(),
                       "load_before": load_before, "load_after": load_after, "peaks": peaks, "rows": rows},
                      f, indent=1)


if __name__ == "__main__":
    main()
