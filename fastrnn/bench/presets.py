"""Benchmark configurations and named presets.

A preset is a list of *grids*; a grid maps each dimension (``cell``, ``batch``, ``seq_len``,
``input_size``, ``hidden_size``, ``layers``, ``bidirectional``, ``dtype``) to a list of values and
expands to their Cartesian product. A command-line flag replaces that dimension's list in every
grid of the preset, so ``--preset sweep-batch --batch 1,8,64`` sweeps those batch sizes and
``--cell gru`` runs the default preset's shapes for the GRU only. ``input_size`` left unset
follows ``hidden_size`` (I = H).

Sizes depend on the device: a CPU-only machine gets small shapes (the whole ``default`` preset,
including the float64 error check, runs in well under two minutes on two cores), a GPU gets
shapes where kernels and cuDNN differ.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

DIMENSIONS = ("cell", "batch", "seq_len", "input_size", "hidden_size", "layers", "bidirectional", "dtype")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Config:
    """One benchmarked problem: a layer stack and its input."""

    cell: str
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"

    def label(self) -> str:
        s = f"{self.cell} B={self.batch} T={self.seq_len} I={self.input_size} H={self.hidden_size}"
        if self.layers != 1:
            s += f" L={self.layers}"
        if self.bidirectional:
            s += " bidir"
        return s + f" {self.dtype}"

    def as_dict(self) -> dict:
        return asdict(self)


# Published numbers for the `flashrnn` preset's shape (design.md §5): H100 SXM, B=16, T=1024,
# I=H=768 LSTM, milliseconds.
ANCHORS = {
    "title": "published anchors (cuDNN, FlashRNN, haste), H100 SXM, LSTM B=16 T=1024 I=H=768",
    "rows": [
        {"implementation": "cuDNN via torch.nn.LSTM, fp16 (persistent algorithm)", "forward_ms": 2.01, "train_ms": 5.19},
        {"implementation": "FlashRNN fused CUDA, bf16", "forward_ms": 4.87, "train_ms": 13.61},
        {"implementation": "FlashRNN alternating (GEMM + pointwise per step)", "forward_ms": 10.79, "train_ms": 26.49},
        {"implementation": "haste LSTM, fp32", "forward_ms": 18.41, "train_ms": 43.86},
    ],
}


def _grids(name: str, device_type: str) -> List[Dict[str, list]]:
    gpu = device_type == "cuda"
    if name == "default":
        if gpu:
            return [dict(cell=["lstm", "gru", "rnn_tanh"], batch=[1, 16, 64, 256], seq_len=[512],
                         hidden_size=[512], dtype=["bfloat16", "float16"])]
        return [dict(cell=["lstm", "gru", "rnn_tanh"], batch=[1, 16, 64, 256], seq_len=[32],
                     hidden_size=[128], dtype=["float32"])]
    if name == "flashrnn":
        return [dict(cell=["lstm", "gru", "rnn_tanh"], batch=[16], seq_len=[1024],
                     input_size=[768], hidden_size=[768], dtype=["bfloat16", "float16"])]
    if name == "targets":  # the kernel issues' speed targets: the flashrnn shape, then large batch
        return _grids("flashrnn", device_type) + [
            dict(cell=["lstm", "gru", "rnn_tanh"], batch=[256], seq_len=[1024 if gpu else 16],
                 hidden_size=[1024 if gpu else 64], dtype=["bfloat16"] if gpu else ["float32"])]
    if name == "cpu":  # backend "cpu"'s targets (issue 20): T=128, I=H, float32, on the CPU
        return [dict(cell=["gru", "rnn_tanh", "lstm"], batch=[1, 16], seq_len=[128], hidden_size=[256, 512],
                     dtype=["float32"])]
    if name == "sweep-batch":
        if gpu:
            return [dict(cell=["lstm"], batch=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512], seq_len=[1024],
                         hidden_size=[768], dtype=["bfloat16"])]
        return [dict(cell=["lstm"], batch=[1, 4, 16, 64, 256], seq_len=[32], hidden_size=[128])]
    if name == "sweep-hidden":
        if gpu:
            return [dict(cell=["lstm"], batch=[16], seq_len=[1024],
                         hidden_size=[64, 128, 256, 512, 768, 1024, 1536, 2048], dtype=["bfloat16"])]
        return [dict(cell=["lstm"], batch=[16], seq_len=[32], hidden_size=[32, 64, 128, 256, 512])]
    if name == "sweep-seq-len":
        if gpu:
            return [dict(cell=["lstm"], batch=[16], seq_len=[16, 64, 256, 1024, 4096, 16384],
                         hidden_size=[768], dtype=["bfloat16"])]
        return [dict(cell=["lstm"], batch=[16], seq_len=[8, 32, 128, 512], hidden_size=[128])]
    if name == "auto-vs-torch":  # backend="auto" against torch.nn: the rule "never slower", the set
        size = dict(seq_len=[64], hidden_size=[128]) if not gpu else dict(seq_len=[512], hidden_size=[512])
        return [dict(cell=["lstm", "gru", "rnn_tanh"], batch=[1, 16, 64], **size),
                dict(cell=["lstm", "gru", "rnn_tanh"], batch=[16], layers=[2], bidirectional=[True], **size)]
    if name == "reference-cpu":  # the reference backend (the CPU path of every fallback) against torch.nn
        return [dict(cell=["lstm", "gru", "rnn_tanh"], batch=[16], seq_len=[64], hidden_size=[128, 256])]
    raise KeyError(name)


PRESETS = {
    "default": "LSTM, GRU and Elman(tanh) from small batch to large; sized by device",
    "flashrnn": "B=16 T=1024 I=H=768, bf16 and fp16, LSTM/GRU/Elman: the shape with published "
                "numbers (FlashRNN's and cuDNN's on an H100); prints those anchors next to the table",
    "targets": "the kernel issues' speed targets: the flashrnn preset plus B=256 H=1024 (bf16, "
               "T=1024) for LSTM/GRU/Elman",
    "cpu": "GRU, Elman(tanh), LSTM at B=1 and 16, T=128, H=256 and 512, float32: the fused CPU "
           "backend's targets (run with --device cpu --threads 1, and 2)",
    "sweep-batch": "LSTM, batch size swept (T, H fixed; sized by device)",
    "sweep-hidden": "LSTM, hidden size swept (B, T fixed; sized by device)",
    "sweep-seq-len": "LSTM, sequence length swept (B, H fixed; sized by device)",
    "auto-vs-torch": "backend='auto' against torch.nn (the rule: never slower): LSTM/GRU/Elman at "
                     "B=1, 16, 64 and a 2-layer bidirectional stack; runs torch.nn and fastrnn:auto",
    "reference-cpu": "the reference backend against torch.nn, B=16 T=64 H=128 and 256; runs torch.nn "
                     "and fastrnn:reference",
}

# What a preset runs when --backends is not given (default: everything available).
BACKENDS = {"auto-vs-torch": ["torch.nn", "auto"], "reference-cpu": ["torch.nn", "reference"]}

DEFAULTS = dict(layers=[1], bidirectional=[False], dtype=["float32"])


def expand(preset: str, device_type: str, overrides: Optional[Dict[str, list]] = None) -> List[Config]:
    """The configurations of ``preset`` on ``device_type`` with ``overrides`` applied, in order,
    without duplicates."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    configs: List[Config] = []
    seen = set()
    for grid in _grids(preset, device_type):
        grid = {**DEFAULTS, **grid, **overrides}
        if "input_size" not in grid:
            grid["input_size"] = [None]
        for values in itertools.product(*(grid[d] for d in DIMENSIONS)):
            point = dict(zip(DIMENSIONS, values))
            if point["input_size"] is None:
                point["input_size"] = point["hidden_size"]
            config = Config(**point)
            if config not in seen:
                seen.add(config)
                configs.append(config)
    return configs
