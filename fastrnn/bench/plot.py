"""``fastrnn-bench plot RESULT.json... --out DIR``: speedup against torch.nn versus B, H and T.

For each swept dimension (batch, hidden_size, seq_len) and each mode (inference, training),
rows that agree on everything else (device, cell, dtype, the other sizes) form one line per
implementation; a line needs at least two points. One PNG per dimension and mode:
``speedup_vs_<dim>_<mode>.png``. matplotlib is optional (``pip install 'fastrnn[plot]'``).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import List, Optional

from .report import load

SCHEMA = "fastrnn-bench/1"  # what fastrnn.bench.cli writes
SWEPT = {"batch": "batch size B", "hidden_size": "hidden size H", "seq_len": "sequence length T"}
OTHER = ("cell", "batch", "seq_len", "input_size", "hidden_size", "layers", "bidirectional", "dtype")


ROW_KEYS = set(OTHER) | {"impl", "mode", "speedup_vs_torch"}


def not_a_result(result) -> Optional[str]:
    """Why ``result`` (a parsed JSON file) is not something :func:`series` can plot; None if it is."""
    if not isinstance(result, dict):
        return f"expected a JSON object, got {type(result).__name__}"
    if result.get("schema") != SCHEMA:
        return f"schema is {result.get('schema')!r}, expected {SCHEMA!r}"
    device = result.get("metadata", {}).get("device") if isinstance(result.get("metadata"), dict) else None
    if not isinstance(device, dict) or "type" not in device or "name" not in device:
        return "no metadata.device with type and name"
    rows = result.get("rows")
    if not isinstance(rows, list):
        return "no list of rows"
    for i, row in enumerate(rows):
        missing = sorted(ROW_KEYS - set(row)) if isinstance(row, dict) else ["(not an object)"]
        if missing:
            return f"row {i} lacks {', '.join(missing)}"
    return None


def series(results: List[dict], dim: str, mode: str) -> dict:
    """{(label): [(x, speedup), ...]} for lines with at least two points."""
    lines = defaultdict(dict)
    for result in results:
        dev = result["metadata"]["device"]
        device = dev["name"] if dev["type"] == "cuda" else "CPU"
        for row in result["rows"]:
            if row["mode"] != mode or row.get("speedup_vs_torch") is None:
                continue
            fixed = [f"{k}={row[k]}" for k in OTHER if k != dim and not (k == "input_size" and row[k] == row["hidden_size"])]
            label = f"{row['impl']} | {device} | " + " ".join(
                v for v in fixed if not v.startswith(("layers=1", "bidirectional=False")))
            lines[label][row[dim]] = row["speedup_vs_torch"]
    return {label: sorted(points.items()) for label, points in lines.items() if len(points) >= 2}


def plot_files(paths: List[str], out_dir: str) -> int:
    try:
        results = load(paths)
    except (OSError, ValueError) as exc:
        print(f"fastrnn-bench plot: cannot read results: {exc}", file=sys.stderr)
        return 2
    for path, result in zip(paths, results):
        why = not_a_result(result)
        if why:
            print(f"fastrnn-bench plot: {path} is not a fastrnn-bench result file ({why}); "
                  f"plot reads the JSON files `fastrnn-bench` writes", file=sys.stderr)
            return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("fastrnn-bench plot needs matplotlib, which is not installed: "
              "pip install matplotlib  (or pip install 'fastrnn[plot]')", file=sys.stderr)
        return 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dim, title in SWEPT.items():
        for mode in ("inference", "training"):
            lines = series(results, dim, mode)
            lines = {k: v for k, v in lines.items() if not k.startswith("torch.nn |")}
            if not lines:
                continue
            fig, ax = plt.subplots(figsize=(8, 5))
            for label, points in sorted(lines.items()):
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label)
            ax.axhline(1.0, color="gray", linewidth=1, linestyle="--")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(title)
            ax.set_ylabel("speedup against torch.nn (higher is faster)")
            ax.set_title(f"{mode}: speedup against torch.nn vs {title}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"speedup_vs_{dim}_{mode}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    if not written:
        print("fastrnn-bench plot: no sweep found (a chart needs rows that differ only in B, H or T)",
              file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0
