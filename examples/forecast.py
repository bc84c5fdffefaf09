"""Time-series forecasting with stacked, bidirectional fastrnn layers on a synthetic series.

The series has three coupled channels: a daily and a weekly cycle with noise, a lagged and
distorted copy of it, and a slow autoregressive channel driven by the other two. A stacked
(``--layers``), bidirectional encoder (``fastrnn.LSTM`` / ``GRU`` / ``RNN``) reads a window of
``--context`` past steps; its final states feed two heads trained together:

* many-to-one: the next step of every channel;
* multi-step (direct): the next ``--horizon`` steps at once.

The one-step head is also rolled out autoregressively over the horizon (each prediction appended
to the window). Errors on held-out data (the last part of the series, never seen in training)
are reported next to the naive forecast that repeats the last observed value; ``skill`` is
``1 - MSE / MSE_naive`` (above 0: better than naive).

    python examples/forecast.py                          # about two minutes on a CPU
    python examples/forecast.py --cell gru --layers 3 --horizon 24 --steps 2000
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fastrnn

try:
    from ._common import Progress, add_common_args, print_metrics, setup
except ImportError:  # run as a script: python examples/forecast.py
    from _common import Progress, add_common_args, print_metrics, setup

LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
CHANNELS = 3


# --------------------------------------------------------------------------------------- data


def synthetic_series(length: int, noise: float = 0.1, seed: int = 0) -> Tensor:
    """(length, 3) float32 series with cycles, a lagged coupling and an autoregressive channel."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64)
    daily, weekly = torch.sin(2 * math.pi * t / 24), torch.sin(2 * math.pi * t / 168 + 1.0)
    a = daily + 0.5 * weekly + noise * torch.randn(length, generator=g, dtype=torch.float64)
    lag = 3
    a_lagged = torch.cat([a[:1].expand(lag), a[:-lag]])
    b = 0.8 * torch.tanh(1.5 * a_lagged) + 0.3 * torch.cos(2 * math.pi * t / 12) \
        + noise * torch.randn(length, generator=g, dtype=torch.float64)
    c = torch.zeros(length, dtype=torch.float64)
    shocks = noise * torch.randn(length, generator=g, dtype=torch.float64)
    for i in range(1, length):  # slow AR(1) channel pushed by the product of the others
        c[i] = 0.95 * c[i - 1] + 0.1 * a[i - 1] * b[i - 1] + shocks[i]
    return torch.stack([a, b, c], dim=1).float()


def windows(series: Tensor, starts: Tensor, context: int, horizon: int) -> Tuple[Tensor, Tensor]:
    """Inputs (N, context, C) and targets (N, horizon, C) for windows beginning at ``starts``."""
    idx = starts[:, None] + torch.arange(context + horizon)[None, :]
    chunk = series[idx]
    return chunk[:, :context], chunk[:, context:]


# -------------------------------------------------------------------------------------- model


class Forecaster(nn.Module):
    """Stacked (bi)directional recurrent encoder; heads read the last layer's final states and
    predict the change from the last observed value (so "no change" is the easy starting point)."""

    def __init__(self, channels: int, hidden: int, layers: int, horizon: int, cell: str = "lstm",
                 bidirectional: bool = True, dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        self.horizon, self.channels = horizon, channels
        self.directions = 2 if bidirectional else 1
        self.rnn = LAYERS[cell](channels, hidden, layers, batch_first=True, bidirectional=bidirectional,
                                dropout=dropout if layers > 1 else 0.0, backend=backend)
        features = self.directions * hidden
        self.one_step = nn.Linear(features, channels)
        self.multi_step = nn.Linear(features, horizon * channels)

    def encode(self, x: Tensor) -> Tensor:
        _, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
        return torch.cat(list(h_n[-self.directions:]), dim=-1)  # last layer, both directions

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x (B, context, C) -> next step (B, C), next ``horizon`` steps (B, horizon, C)."""
        features = self.encode(x)
        last = x[:, -1]
        one = last + self.one_step(features)
        multi = last[:, None] + self.multi_step(features).view(-1, self.horizon, self.channels)
        return one, multi

    @torch.no_grad()
    def rollout(self, x: Tensor, steps: int) -> Tensor:
        """Iterate the one-step head ``steps`` times, appending each prediction to the window."""
        preds = []
        for _ in range(steps):
            one, _ = self(x)
            preds.append(one)
            x = torch.cat([x[:, 1:], one[:, None]], dim=1)
        return torch.stack(preds, dim=1)


# ----------------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model: Forecaster, x: Tensor, y: Tensor, batch: int = 512) -> Dict[str, float]:
    model.eval()
    ones, multis, rolls = [], [], []
    for i in range(0, x.shape[0], batch):
        one, multi = model(x[i : i + batch])
        ones.append(one)
        multis.append(multi)
        rolls.append(model.rollout(x[i : i + batch], y.shape[1]))
    model.train()
    one, multi, roll = torch.cat(ones), torch.cat(multis), torch.cat(rolls)
    naive = x[:, -1:].expand_as(y)  # repeat the last observed value
    mse = lambda a, b: F.mse_loss(a, b).item()
    mae = lambda a, b: F.l1_loss(a, b).item()
    m = {
        "one_step_mse": mse(one, y[:, 0]),
        "one_step_naive_mse": mse(naive[:, 0], y[:, 0]),
        "multi_step_mse": mse(multi, y),
        "multi_step_naive_mse": mse(naive, y),
        "rollout_mse": mse(roll, y),
        "one_step_mae": mae(one, y[:, 0]),
        "multi_step_mae": mae(multi, y),
        "multi_step_naive_mae": mae(naive, y),
        "multi_step_mse_last_step": mse(multi[:, -1], y[:, -1]),
        "naive_mse_last_step": mse(naive[:, -1], y[:, -1]),
    }
    m["one_step_skill"] = 1 - m["one_step_mse"] / m["one_step_naive_mse"]
    m["multi_step_skill"] = 1 - m["multi_step_mse"] / m["multi_step_naive_mse"]
    m["rollout_skill"] = 1 - m["rollout_mse"] / m["multi_step_naive_mse"]
    return m


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--length", type=int, default=20_000, help="steps in the synthetic series")
    p.add_argument("--noise", type=float, default=0.1, help="noise level of the series")
    p.add_argument("--val-fraction", type=float, default=0.2, help="tail of the series held out")
    p.add_argument("--context", type=int, default=48, help="past steps the model sees")
    p.add_argument("--horizon", type=int, default=12, help="steps ahead for the multi-step forecast")
    p.add_argument("--cell", choices=sorted(LAYERS), default="lstm")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2, help="stacked recurrent layers")
    p.add_argument("--unidirectional", action="store_true", help="one-direction encoder (default: bidirectional)")
    p.add_argument("--dropout", type=float, default=0.0, help="between recurrent layers")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--eval-windows", type=int, default=1000, help="held-out windows for the final errors")
    add_common_args(p)
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = build_parser().parse_args(argv)
    device, say = setup(args)

    series = synthetic_series(args.length, args.noise, args.seed)
    split = int(args.length * (1 - args.val_fraction))
    mean, std = series[:split].mean(0), series[:split].std(0)
    series = ((series - mean) / std).to(device)  # normalised with training statistics only
    span = args.context + args.horizon
    if split - span < 1 or args.length - split - span < 1:
        raise SystemExit("series too short for --context + --horizon on both sides of the split")
    val_starts = torch.linspace(split, args.length - span, min(args.eval_windows, args.length - split - span + 1))
    val_x, val_y = windows(series, val_starts.long().to(device), args.context, args.horizon)

    model = Forecaster(CHANNELS, args.hidden, args.layers, args.horizon, args.cell, not args.unidirectional,
                       args.dropout, args.backend).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(args.steps, 1), eta_min=args.lr / 10)
    g = torch.Generator().manual_seed(args.seed)
    say(f"model: {args.layers} x {'bi' if not args.unidirectional else 'uni'}directional {args.cell}, "
        f"hidden {args.hidden}, {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"{split:,} training steps of series, {val_x.shape[0]} held-out windows")

    history: List[float] = []
    progress = Progress(args.steps, "train", enabled=not args.quiet)
    smoothed = None
    t0 = time.perf_counter()
    for _ in range(args.steps):
        starts = torch.randint(0, split - span + 1, (args.batch_size,), generator=g).to(device)
        x, y = windows(series, starts, args.context, args.horizon)
        one, multi = model(x)
        loss = F.mse_loss(one, y[:, 0]) + F.mse_loss(multi, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        schedule.step()
        history.append(loss.item())
        smoothed = history[-1] if smoothed is None else 0.95 * smoothed + 0.05 * history[-1]
        progress.update(1, loss=smoothed)
    progress.close()
    seconds = time.perf_counter() - t0

    tail = history[-max(len(history) // 10, 1):]
    metrics: Dict[str, object] = {
        "steps": args.steps,
        "train_loss_first": history[0] if history else float("nan"),
        "train_loss_last": sum(tail) / len(tail) if tail else float("nan"),
        **evaluate(model, val_x, val_y),
        "train_seconds": seconds,
    }
    print_metrics("forecast results (held-out windows, normalised units; skill = 1 - MSE/MSE_naive):", metrics)
    metrics["history"], metrics["model"] = history, model
    return metrics


if __name__ == "__main__":
    main()
