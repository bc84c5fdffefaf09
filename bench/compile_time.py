"""torch.compile of a fastrnn model against the sequence length T: compile time, and a compiled
training step's run time beside eager mode's.

Each T is compiled in a fresh Python process with Inductor's caches off, so every row is a cold
compile. A row is: the first call (compile + one forward and backward), a later call (the
run-time cost), their difference (the compile time), the same forward + backward in eager mode
(timed alternating with the compiled one, call by call, in the same process: medians), the ratio
compiled / eager (<= 1: compiling costs nothing at run time; each layer-direction's forward runs
once, fastrnn/ops.py), and the process's peak resident memory. Because each layer-direction is
one operator, compile time should not depend on T (the acceptance bar: T=256 within 1.5x of T=8).

    python bench/compile_time.py                     # LSTM, 2 layers, Inductor, T = 8 ... 512
    python bench/compile_time.py --cell gru --seq-lens 8 256 --backend aot_eager
    python bench/compile_time.py --cell gru --batch 16 --input-size 256 --hidden-size 256 --seq-lens 128 \
        --repeats 21 --threads 1 --json bench/results/compile_gru.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one(args) -> dict:
    import resource

    import torch

    import fastrnn

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}[args.cell]
    model = cls(args.input_size, args.hidden_size, num_layers=args.layers, bidirectional=args.bidirectional)
    compiled = torch.compile(model, backend=args.backend, fullgraph=True, dynamic=args.dynamic)
    x = torch.randn(args.seq_len, args.batch, args.input_size, requires_grad=True)

    def step(fn):
        out, _ = fn(x)
        out.square().sum().backward()

    start = time.perf_counter()
    step(compiled)
    first = time.perf_counter() - start
    step(model)  # eager's warm-up
    times = {"compiled": [], "eager": []}
    for _ in range(args.repeats):  # alternating, so both see the same machine
        for name, fn in (("compiled", compiled), ("eager", model)):
            start = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - start)
    later, eager = (sorted(times[k])[len(times[k]) // 2] for k in ("compiled", "eager"))  # medians
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"T": args.seq_len, "first_call_s": first, "later_call_s": later, "eager_call_s": eager,
            "compiled_over_eager": later / eager, "compile_s": first - later, "peak_rss_mb": peak_mb}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[8, 32, 128, 256, 512])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", help="also write the rows (and the settings) to this file")
    parser.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)  # one row, in a child process
    args = parser.parse_args(argv)

    if args.seq_len is not None:
        print(json.dumps(_one(args)))
        return 0

    env = dict(os.environ, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    base = [sys.executable, os.path.abspath(__file__)] + [a for a in (argv or sys.argv[1:])]
    print(f"torch.compile(backend={args.backend!r}, fullgraph=True, dynamic={args.dynamic}) of fastrnn."
          f"{args.cell.upper() if args.cell != 'rnn' else 'RNN'}({args.input_size}, {args.hidden_size}, "
          f"num_layers={args.layers}, bidirectional={args.bidirectional}), batch {args.batch}, forward+backward")
    print(f"{'T':>6} {'first call s':>13} {'later call s':>13} {'eager call s':>13} {'compiled/eager':>15} "
          f"{'compile s':>10} {'peak RSS MB':>12}")
    rows = []
    for seq_len in args.seq_lens:
        out = subprocess.run(base + ["--seq-len", str(seq_len)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['T']:>6} {row['first_call_s']:>13.2f} {row['later_call_s']:>13.4f} {row['eager_call_s']:>13.4f} "
              f"{row['compiled_over_eager']:>15.2f} {row['compile_s']:>10.2f} {row['peak_rss_mb']:>12.0f}")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "seq_len")}
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "load_average": os.getloadavg(), "rows": rows}, f, indent=1)
    if len(rows) > 1:
        print(f"compile time, T={rows[-1]['T']} / T={rows[0]['T']}: {rows[-1]['compile_s'] / rows[0]['compile_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
