"""CPU benchmark of the reference backend against torch.nn, forward+backward, same run.

    python bench/reference_cpu.py [--seq-len 128 --batch 32 --size 256 --repeats 15]

Both modules get identical weights and inputs; runs are interleaved (torch.nn, fastrnn,
torch.nn, ...) so drift in machine load hits both alike; one warm-up run each is excluded and
the median is reported. Prints one line per cell with the ratio fastrnn / torch.nn.

torch.nn's CPU LSTM runs oneDNN's fused LSTM when oneDNN is enabled (the default); GRU and Elman
run torch's native per-step implementation. The "torch.nn native" column times torch.nn with
oneDNN disabled, which is the same algorithm as fastrnn's reference (a GEMM per step).
"""

import argparse
import statistics
import time

import torch
from torch import nn

import fastrnn


def time_fwd_bwd(module, x):
    start = time.perf_counter()
    out, _ = module(x)
    out.sum().backward()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="LSTM,GRU,RNN")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="input_size = hidden_size")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"T={args.seq_len} B={args.batch} I=H={args.size}, forward+backward")
    for cell in args.cells.split(","):
        ours = getattr(fastrnn, cell)(args.size, args.size, backend="reference")
        theirs = getattr(nn, cell)(args.size, args.size)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(args.seq_len, args.batch, args.size, requires_grad=True)
        times = {"torch.nn": [], "torch.nn native": [], "fastrnn": []}
        for k in range(args.repeats + 1):
            for name, module in (("torch.nn", theirs), ("torch.nn native", theirs), ("fastrnn", ours)):
                with torch.backends.mkldnn.flags(enabled=name != "torch.nn native"):
                    elapsed = time_fwd_bwd(module, x)
                if k > 0:  # the first round is warm-up
                    times[name].append(elapsed)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        print(f"{cell:5s} torch.nn {med['torch.nn']:8.2f} ms   torch.nn native {med['torch.nn native']:8.2f} ms"
              f"   fastrnn reference {med['fastrnn']:8.2f} ms   ratio to torch.nn {med['fastrnn'] / med['torch.nn']:.2f}x"
              f"   to native {med['fastrnn'] / med['torch.nn native']:.2f}x")


if __name__ == "__main__":
    main()
