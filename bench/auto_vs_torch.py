"""fastrnn as a user gets it (``backend="auto"``) against torch.nn, side by side in one process.

The rule it checks: ``auto`` is never slower than torch.nn. For each configuration (the issue's
CPU set: LSTM, GRU and Elman at B in {1, 16, 64}, I=H=128, T=64, a 2-layer bidirectional stack
and a packed batch) it times torch.nn and fastrnn with the same weights and inputs, alternating
the two call by call, and reports the median time of each and the ratio torch.nn / fastrnn
(>= 1: fastrnn is at least as fast), for inference (``no_grad``) and training (forward +
backward). Outputs are checked equal to torch.nn's first.

    python bench/auto_vs_torch.py                 # all configurations, 1 thread
    python bench/auto_vs_torch.py --repeats 201 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fastrnn  # noqa: E402

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


def label(config):
    s = f"{config['cell']} B={config['batch']}"
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} alternating calls")
    print(f"{'configuration':<26} {'mode':<10} {'torch.nn ms':>12} {'fastrnn ms':>11} {'torch.nn/fastrnn':>17}  backend")
    for config in configs():
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
    worst = min(rows, key=lambda r: r["ratio"])
    print(f"lowest ratio: {worst['ratio']:.3f} ({label(worst)}, {worst['mode']})")
    if args.json is not None:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads,
                                         "repeats": args.repeats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
