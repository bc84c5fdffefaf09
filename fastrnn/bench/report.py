"""Output: the terminal table, the JSON result file and the optional CSV."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import List

ROW_FIELDS = [
    # configuration
    "cell", "batch", "seq_len", "input_size", "hidden_size", "layers", "bidirectional", "dtype",
    # what ran
    "impl", "impl_kind", "backend", "mode", "torch_nn_path", "tf32",
    # time
    "median_ms", "p20_ms", "p80_ms", "min_ms", "samples", "warmup", "input_buffers", "us_per_step",
    "speedup_vs_torch", "flops", "tflops", "spread_rel", "noisy",
    # memory
    "peak_mem_mb", "peak_mem_method",
    # correctness against the float64 reference
    "max_rel_err_out", "max_rel_err_grad", "grad_errors", "error_vs_torch", "error_tolerance", "error_ok",
]


# A row is noisy when its p20-p80 spread exceeds this fraction of its median: its time, and any
# speed-up computed from it, is not stable to the precision the table prints.
NOISY_SPREAD = 0.10


def mark_noisy(rows: List[dict]) -> int:
    """Add ``spread_rel`` ((p80 - p20) / median) and ``noisy`` to each row; return how many are noisy."""
    for row in rows:
        median, p20, p80 = row.get("median_ms"), row.get("p20_ms"), row.get("p80_ms")
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (median, p20, p80)) and median > 0
        row["spread_rel"] = round((p80 - p20) / median, 4) if ok else None
        row["noisy"] = bool(ok and row["spread_rel"] > NOISY_SPREAD)
    return sum(row["noisy"] for row in rows)


def noisy_note(count: int) -> str:
    return (f"{count} row(s) marked '~ noisy': p20-p80 spread above {NOISY_SPREAD:.0%} of the median; "
            f"their times and speed-ups (a speed-up is also uncertain when its torch.nn row is noisy) "
            f"are not reliable; rerun on a quiet machine or with more --repeats")


def _fmt(value, spec: str, none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def table(result: dict) -> str:
    """The human-readable table: one block per configuration, one line per implementation and mode."""
    lines = []
    meta = result["metadata"]
    dev = meta["device"]
    where = (f"{dev['name']} ({dev['sm_count']} SMs, sm_{dev['capability'][0]}{dev['capability'][1]})"
             if dev["type"] == "cuda" else f"CPU {dev['name']} (torch threads={dev['threads']})")
    lines.append(f"fastrnn-bench  preset={result['settings']['preset']}  {where}")
    lines.append(f"fastrnn {meta.get('fastrnn')}  torch {meta['torch']}  cuda {meta['cuda']}  cudnn {meta['cudnn']}  "
                 f"triton {meta['triton']}  commit {meta['commit'][:12]}{' (dirty)' if meta.get('git_dirty') else ''}")
    tf32 = meta["tf32"]
    if dev["type"] == "cuda":
        lines.append(f"TF32: matmul {'on' if tf32['matmul'] else 'off'}, cuDNN {'on' if tf32['cudnn'] else 'off'} "
                     "(applies to float32 rows on sm_80+; per-row flag in JSON)")
    barrier = meta.get("grid_barrier")
    if barrier:
        lines.append(f"floor of a persistent step: one empty grid.sync() over {barrier['blocks']} blocks = "
                     f"{barrier['us_per_barrier']:.2f} us (compare the rows' us/step)")
    lines.append(f"timing: {result['settings']['timing_method']}; up to {result['settings']['repeats']} samples, "
                 f"{result['settings']['warmup']} warm-up; err = |out-ref|max/|ref|max vs float64 reference")
    header = (f"  {'impl':<20} {'mode':<9} {'median ms':>10} {'p20-p80 ms':>17} {'us/step':>9} "
              f"{'speedup':>8} {'TFLOP/s':>8} {'peak MB':>8} {'err out':>8} {'err grad':>8}")
    groups = {}  # config key -> ([rows], [skips]) in first-seen order
    for row in result["rows"]:
        groups.setdefault(_key(row), ([], []))[0].append(row)
    for skip in result["skipped"]:
        groups.setdefault(_key(skip["config"]), ([], []))[1].append(skip)
    noisy_torch = {(_key(r), r["mode"]) for r in result["rows"] if r.get("noisy") and r["impl_kind"] == "torch"}
    for key, (rows, skips) in groups.items():
        lines.append("")
        cell, batch, seq_len, input_size, hidden_size, layers, bidirectional, dtype = key
        label = (f"{cell} B={batch} T={seq_len} I={input_size} H={hidden_size}"
                 + (f" L={layers}" if layers != 1 else "") + (" bidir" if bidirectional else "") + f" {dtype}")
        paths = []
        for row in rows:
            text = f"{row['mode']}: {row['torch_nn_path']}"
            if text not in paths:
                paths.append(text)
        lines.append(label + (f"  | torch.nn path: {'; '.join(paths)}" if paths else ""))
        if rows:
            lines.append(header)
        for row in rows:
            flag = "" if row["error_ok"] in (True, None) else "  ! error above tolerance"
            if row.get("noisy"):
                flag += f"  ~ noisy: p20-p80 spread {row['spread_rel']:.0%} of the median"
            elif row.get("speedup_vs_torch") is not None and (key, row["mode"]) in noisy_torch:
                flag += "  ~ noisy torch.nn row: speed-up uncertain"
            spread = f"{_fmt(row['p20_ms'], '.3f')}-{_fmt(row['p80_ms'], '.3f')}"
            impl = row["impl"] + (f" ({row['auto_backend']})" if row.get("auto_backend") else "")
            lines.append(
                f"  {impl:<20} {row['mode']:<9} {_fmt(row['median_ms'], '10.3f')} {spread:>17} "
                f"{_fmt(row['us_per_step'], '9.1f')} {_fmt(row['speedup_vs_torch'], '7.2f', '-') + ('x' if row['speedup_vs_torch'] else ''):>8} "
                f"{_fmt(row['tflops'], '8.3g'):>8} {_fmt(row['peak_mem_mb'], '8.1f'):>8} "
                f"{_fmt(row['max_rel_err_out'], '8.1e'):>8} {_fmt(row['max_rel_err_grad'], '8.1e'):>8}{flag}")
        for skip in skips:
            lines.append(f"  {skip['impl']:<20} {skip.get('mode', ''):<9} skipped: {skip['reason']}")
    if result.get("anchors"):
        lines.append("")
        lines.append(result["anchors"]["title"] + ":")
        lines.append(f"  {'implementation':<55} {'forward ms':>10} {'fwd+bwd ms':>10}")
        for a in result["anchors"]["rows"]:
            lines.append(f"  {a['implementation']:<55} {a['forward_ms']:>10.2f} {a['train_ms']:>10.2f}")
    if result["notes"]:
        lines.append("")
        lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


KEY = ("cell", "batch", "seq_len", "input_size", "hidden_size", "layers", "bidirectional", "dtype")


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def _json_safe(value):
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_path(output, result: dict) -> Path:
    """Where ``--output`` puts the JSON: the path given, or the default name inside it when it
    is a folder (an existing one, or one written with a trailing slash)."""
    if output is None:
        return default_json_path(result)
    path = Path(output)
    if path.is_dir() or str(output).endswith(("/", "\\")):
        return default_json_path(result, path)
    return path


def default_json_path(result: dict, directory: Path = Path("bench/results")) -> Path:
    """bench/results/<UTC date-time>_<gpu-or-cpu>_<commit>.json"""
    meta = result["metadata"]
    date = meta["date"].replace("-", "").replace(":", "").split("+")[0]  # 20261122T163000
    dev = meta["device"]
    name = dev["name"] if dev["type"] == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"
    commit = meta["commit"][:12] if meta["commit"] != "unknown" else "unknown"
    return directory / f"{date}_{slug}_{commit}.json"


def write_json(result: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(result), indent=1) + "\n")
    return path


def write_csv(rows: List[dict], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = {k: (json.dumps(_json_safe(v)) if isinstance(v, dict) else _json_safe(v))
                    for k, v in row.items()}
            writer.writerow(flat)
    return path


def load(paths: List[str]) -> List[dict]:
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out

