"""Shared helpers for the examples: device choice, seeding, common flags, a progress printer.

Nothing here is specific to one example; each example imports what it needs.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from typing import Dict, Optional, TextIO

import torch

import fastrnn


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every example takes: --device, --backend, --seed, --quiet."""
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', ... "
                             "(default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=["auto"] + fastrnn.registered_backends(),
                        help="fastrnn backend for the recurrent layers (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default). These models are small, so "
                             "on a busy or many-core CPU 1-4 threads are often faster (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, only the final metrics")


def setup(args: argparse.Namespace):
    """Apply the common flags: seed, CPU threads, device. Returns (device, say), where ``say``
    prints unless --quiet."""
    seed_everything(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    say = (lambda *a: None) if args.quiet else print
    say(describe_run(device, args.backend))
    return device, say


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> the first CUDA GPU when there is one, else the CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """A small progress bar: ``step/total``, a bar, rate, elapsed and remaining time, metrics.

    On a terminal it redraws one line in place (at most ``redraw_s`` apart); otherwise (a log
    file, a pipe, a CI job) it prints a plain line about every 10% so the log stays short.
    ``update(n, **metrics)`` advances by ``n``; ``close()`` ends the line.
    """

    def __init__(self, total: int, desc: str = "", enabled: bool = True, stream: Optional[TextIO] = None,
                 width: int = 24, redraw_s: float = 0.1) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.redraw_s = redraw_s
        self.count = 0
        self.metrics: Dict[str, float] = {}
        self.start = time.perf_counter()
        self._last_draw = -math.inf
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1, **metrics: float) -> None:
        self.count = min(self.count + n, self.total)
        self.metrics.update(metrics)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= self.redraw_s or self.count == self.total:
                self._last_draw = now
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
        else:
            decile = (10 * self.count) // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        fraction = self.count / self.total
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        rate = self.count / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.count) / rate if rate > 0 else math.inf
        metrics = " ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items())
        prefix = f"{self.desc}: " if self.desc else ""
        return (f"{prefix}{self.count}/{self.total} [{bar}] {rate:.1f} it/s "
                f"{format_duration(elapsed)}<{format_duration(remaining)} {metrics}").rstrip()

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_metrics(title: str, metrics: Dict[str, object], stream: Optional[TextIO] = None) -> None:
    """Print the final metrics as an aligned two-column table."""
    stream = stream if stream is not None else sys.stdout
    width = max((len(k) for k in metrics), default=0)
    print(title, file=stream)
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {_fmt(value)}", file=stream)


def describe_run(device: torch.device, backend: str) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
    return f"device {device} [{name}], fastrnn backend {backend!r}, torch {torch.__version__}"
