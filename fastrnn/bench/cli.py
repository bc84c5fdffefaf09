"""``fastrnn-bench``: time fastrnn's backends and torch.nn side by side.

    fastrnn-bench                                  # the `default` preset on the best device here
    fastrnn-bench --preset flashrnn                # B=16 T=1024 I=H=768 bf16/fp16 + published anchors
    fastrnn-bench --preset sweep-batch --cell gru  # sweeps: sweep-batch, sweep-hidden, sweep-seq-len
    fastrnn-bench --preset auto-vs-torch           # backend="auto" vs torch.nn (also: reference-cpu)
    fastrnn-bench --cell lstm --batch 1,8 --seq-len 256 --hidden-size 512 --dtype bfloat16
    fastrnn-bench --list                           # presets, backends and peers, and what is available
    fastrnn-bench plot bench/results/*.json --out bench/plots

Size flags take comma-separated lists and replace that dimension of the preset's grid.
Results: a table on stdout, one JSON file per run (``--output``; default
``bench/results/<date>_<gpu-or-cpu>_<commit>.json``), a CSV with ``--csv``; progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import presets


def _positive_ints(what: str):
    def parse(text: str) -> List[int]:
        values = []
        for part in text.split(","):
            part = part.strip()
            try:
                value = int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{what} must be a positive integer or a comma-separated "
                                                 f"list of them, got {part!r}") from None
            if value <= 0:
                raise argparse.ArgumentTypeError(f"{what} must be positive, got {value}")
            values.append(value)
        return values
    return parse


def _choices(what: str, allowed, aliases=None):
    aliases = aliases or {}

    def parse(text: str) -> List[str]:
        values = []
        for part in text.split(","):
            part = aliases.get(part.strip().lower(), part.strip().lower())
            if part not in allowed:
                raise argparse.ArgumentTypeError(f"unknown {what} {part!r}; choose from {', '.join(allowed)}")
            if part not in values:
                values.append(part)
        return values
    return parse


def _count(what: str, minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        return value
    return parse


def _threads(text: str):
    if text == "auto":
        return text
    return _count("--threads", 1)(text)


def auto_threads(current: int) -> tuple:
    """-> (threads, note or None): fewer threads than ``current`` when other processes keep
    cores busy (1-minute load average), else ``current``."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return current, None
    cores = os.cpu_count() or current
    idle = max(1, int(cores - load + 0.5))
    if idle >= current:
        return current, None
    return idle, (f"machine busy (load average {load:.1f} on {cores} cores): timing with {idle} torch "
                  f"thread(s) instead of {current} (--threads N to override)")


def _names(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--backends needs at least one name")
    return names


CELL_ALIASES = {"rnn": "rnn_tanh", "elman": "rnn_tanh", "tanh": "rnn_tanh", "relu": "rnn_relu"}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastrnn-bench",
        allow_abbrev=False,
        description="Time each available fastrnn backend and torch.nn on the same inputs, weights and "
                    "dtype (inference and training), with per-row error against a float64 reference. "
                    "`fastrnn-bench plot RESULT.json... --out DIR` draws charts from result files.",
        epilog="Presets: " + "; ".join(f"{k}: {v}" for k, v in presets.PRESETS.items()),
    )
    p.add_argument("--preset", choices=sorted(presets.PRESETS), default="default",
                   help="named set of configurations (default: %(default)s)")
    p.add_argument("--cell", type=_choices("cell", presets.CELLS, CELL_ALIASES),
                   help="comma list of lstm, gru, rnn_tanh, rnn_relu")
    p.add_argument("--batch", type=_positive_ints("--batch"), help="batch sizes, e.g. 1,16,64")
    p.add_argument("--seq-len", type=_positive_ints("--seq-len"), help="sequence lengths T")
    p.add_argument("--input-size", type=_positive_ints("--input-size"), help="input sizes I (default: = H)")
    p.add_argument("--hidden-size", type=_positive_ints("--hidden-size"), help="hidden sizes H")
    p.add_argument("--layers", type=_positive_ints("--layers"), help="numbers of layers")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional layers")
    p.add_argument("--dtype", type=_choices("dtype", presets.DTYPES, DTYPE_ALIASES),
                   help="comma list of float32, bfloat16, float16")
    p.add_argument("--backends", type=_names,
                   help="comma list of what to time: torch (torch.nn), fastrnn backend names "
                        "(see --list), peers flashrnn, torchrl, onnxruntime (default: all available)")
    p.add_argument("--repeats", type=_count("--repeats", 1), help="timed calls per row (default: 30 on GPU, 11 on CPU)")
    p.add_argument("--warmup", type=_count("--warmup", 0), help="untimed calls per row after the error check "
                   "(default: 5 on GPU, 1 on CPU)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="bound on the timed rounds of the whole run, split evenly over the configurations; "
                        "a row stops sampling early (keeping at least 3 samples) once its share is spent "
                        "(default: 60 on the CPU, none on a GPU; 0: no bound)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=_threads, default="auto",
                   help="torch CPU threads (torch.set_num_threads), or auto (default): torch's own choice, "
                        "reduced to the cores other processes leave idle (1-minute load average) when the "
                        "machine is busy, since oversubscribed OpenMP threads make CPU timings meaningless")
    p.add_argument("--tf32", choices=("default", "on", "off"), default="default",
                   help="TF32 for float32 matmuls and cuDNN (default: leave torch's flags as they are)")
    p.add_argument("--no-check", action="store_true", help="skip the float64 error check (errors reported as null)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    p.add_argument("--output", "-o", help="JSON result path, or a folder to write the default name into "
                                          "(default: bench/results/<date>_<device>_<commit>.json)")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    p.add_argument("--csv", help="also write the rows as CSV to this path")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a non-torch.nn row's error is above tolerance or a backend failed")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    p.add_argument("--list", action="store_true", help="list presets, backends and peers, then exit")
    return p


def plot_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrnn-bench plot", allow_abbrev=False,
                                description="Draw speedup-against-torch.nn charts (vs B, H, T) from result files.")
    p.add_argument("results", nargs="+", help="JSON files written by fastrnn-bench")
    p.add_argument("--out", default="bench/plots", help="directory for the PNG files (default: %(default)s)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plot":
        args = plot_parser().parse_args(argv[1:])
        from .plot import plot_files

        return plot_files(args.results, args.out)
    if argv and argv[0] == "run":
        argv = argv[1:]
    parser = run_parser()
    args = parser.parse_args(argv)
    return run(args, parser)


def _resolve_device(spec: Optional[str], parser):
    import torch

    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        parser.error(f"--device: not a device: {spec!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            parser.error(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        parser.error(f"--device must be cpu or cuda[:N], got {spec!r}")
    return device


def run(args, parser) -> int:
    """Run the benchmark; torch's thread count and TF32 flags are restored afterwards."""
    import torch

    saved = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        return _run(args, parser)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


def _run(args, parser) -> int:
    started = time.perf_counter()
    import torch

    from . import barrier_floor, environment, report, runner

    device = _resolve_device(args.device, parser)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)
    notes = []  # backends register themselves when fastrnn is imported
    if args.backends is not None:
        known = runner.known_names()
        unknown = [n for n in args.backends if n not in known]
        if unknown:
            parser.error(f"--backends: unknown backend {unknown[0]!r}; known: {', '.join(known)}")
    if args.list:
        return _list(device, notes)
    if device.type == "cpu":
        if args.threads == "auto":
            threads, note = auto_threads(torch.get_num_threads())
            if note:
                notes.append(note)
                if not args.quiet:
                    print(f"note: {note}", file=sys.stderr)
        else:
            threads = args.threads
        torch.set_num_threads(threads)
    if args.tf32 != "default":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"

    overrides = {
        "cell": args.cell, "batch": args.batch, "seq_len": args.seq_len, "input_size": args.input_size,
        "hidden_size": args.hidden_size, "layers": args.layers, "dtype": args.dtype,
        "bidirectional": [True] if args.bidirectional else None,
    }
    configs = presets.expand(args.preset, device.type, overrides)
    gpu = device.type == "cuda"
    repeats = args.repeats if args.repeats is not None else (30 if gpu else 11)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)

    budget = args.time_budget if args.time_budget is not None else (None if gpu else 60.0)
    if budget is not None and budget < 0:
        parser.error(f"--time-budget must be >= 0, got {args.time_budget}")
    budget = budget or None
    per_config = budget / len(configs) if budget and configs else None

    impls, impl_notes = runner.select_impls(args.backends or presets.BACKENDS.get(args.preset))
    notes += impl_notes
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and any(
            impl.backend == "triton" for impl in impls):
        notes.append("fastrnn:triton runs in Triton's CPU interpreter here (TRITON_INTERPRET=1): its rows "
                     "check correctness; their times say nothing about GPU speed")
    if device.type == "cpu":
        notes.append("CPU run: torch.nn runs torch's native CPU kernels (oneDNN for the LSTM where "
                     "eligible); peak memory is not measured on the CPU (null)")
        if args.preset != "default" and not args.quiet:
            print(f"note: preset {args.preset!r} on the CPU can take a while", file=sys.stderr)
    if not impls:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print("fastrnn-bench: nothing to time: none of the requested implementations is available here",
              file=sys.stderr)
        return 1
    metadata = environment.run_metadata(device)
    metadata["grid_barrier"] = barrier_floor.measure(device)  # None on the CPU / without fastrnn._C
    device_info = metadata["device"]

    rows, skipped = [], []
    path = None if args.no_save else report.json_path(args.output, {"metadata": metadata})
    for i, config in enumerate(configs, 1):
        if not args.quiet:
            runner.progress(i, len(configs), config, started)
        r, s = runner.run_config(config, impls, device, device_info, repeats, warmup,
                                 check_errors=not args.no_check, seed=args.seed, time_budget_s=per_config)
        rows += r
        skipped += [dict(config=config.as_dict(), **item) for item in s]
        if path is not None and i < len(configs):
            runner.write_partial(path, metadata, args.preset, rows, skipped, i, len(configs))

    short = sum(1 for r in rows if r["samples"] < repeats)
    if short:
        notes.append(f"{short} row(s) got fewer than {repeats} samples: the time budget "
                     f"({budget:g} s for the run's timed rounds; --time-budget) was spent; see 'samples'")
    noisy = report.mark_noisy(rows)
    if noisy:
        notes.append(report.noisy_note(noisy))
    timer = runner.Timer(device)
    result = {
        "schema": "fastrnn-bench/1",
        "metadata": metadata,
        "settings": {
            "preset": args.preset, "device": str(device), "repeats": repeats, "warmup": warmup,
            "check_errors": not args.no_check, "seed": args.seed, "tf32_flag": args.tf32,
            "time_budget_s": budget, "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "threads_flag": args.threads,
            "impls": [impl.name for impl in impls], "timing_method": timer.method,
            "flop_count": "matrix products only: forward 2*T*B*G*H*(I_l+H) per layer-direction, "
                          "backward 2x forward",
            "argv": argv_for_record(args),
        },
        "rows": rows,
        "skipped": skipped,
        "notes": notes,
        "anchors": presets.ANCHORS if args.preset in ("flashrnn", "targets") else None,
    }
    result["wall_s"] = round(time.perf_counter() - started, 2)
    print(report.table(result))
    if path is not None:
        report.write_json(result, path)
        print(f"\nwrote {path}", file=sys.stderr)
    if args.csv:
        report.write_csv(rows, Path(args.csv))
        print(f"wrote {args.csv}", file=sys.stderr)
    if not args.quiet:
        print(f"done in {result['wall_s']:.1f} s", file=sys.stderr)
    if args.strict:
        bad = [r for r in rows if r["error_ok"] is False and r["impl_kind"] != "torch"]
        failed = [s for s in skipped if s["reason"].startswith("failed")]
        if bad or failed:
            print(f"--strict: {len(bad)} row(s) above error tolerance, {len(failed)} failure(s)", file=sys.stderr)
            return 1
    return 0


def argv_for_record(args) -> dict:
    return {k: v for k, v in vars(args).items() if v not in (None, False)}


def _list(device, notes) -> int:
    import fastrnn
    from fastrnn import backends

    from . import peers

    print("presets:")
    for name, text in presets.PRESETS.items():
        print(f"  {name:<14} {text}")
    print("implementations (for --backends):")
    print("  torch.nn       torch.nn (cuDNN on a GPU, torch's native kernels on the CPU); alias cudnn")
    print("  auto           fastrnn as a user gets it (backend='auto': the backend each row names in the JSON)")
    for name in fastrnn.registered_backends():
        why = backends.get_backend(name).unavailable()
        print(f"  {name:<14} fastrnn backend: {'available' if why is None else 'unavailable: ' + why}")
    _, peer_notes = peers.detect(list(peers.PEERS))
    for name in peers.PEERS:
        line = next((n for n in peer_notes if n.startswith(f"peer {name}:")), "available")
        print(f"  {name:<14} {line}")
    for note in notes:
        print(f"note: {note}")
    return 0
