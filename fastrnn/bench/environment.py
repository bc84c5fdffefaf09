"""Run metadata: device, library versions, threads, TF32 flags and the git commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch


def package_version(name: str) -> Optional[str]:
    """Version of an installed distribution, without importing it (None when absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(start: Optional[Path] = None) -> dict:
    """``git rev-parse HEAD`` of the repository holding fastrnn ("unknown" if not a checkout)."""
    where = start or Path(__file__).resolve().parents[2]
    info = {"commit": "unknown", "dirty": None}
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["commit"] = out.stdout.strip()
            status = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True, timeout=10)
            info["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    """What the benchmark and the cuDNN heuristic need to know about ``device``."""
    info = {"type": device.type, "device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            name=props.name,
            sm_count=props.multi_processor_count,
            capability=[props.major, props.minor],
            memory_gib=round(props.total_memory / 2**30, 1),
            l2_cache_bytes=getattr(props, "L2_cache_size", None),
            cudnn_enabled=bool(torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()),
            cudnn_version=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        )
    else:
        mkldnn = torch.backends.mkldnn
        info.update(
            name=cpu_name(),
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
            mkldnn_enabled=bool(mkldnn.is_available() and mkldnn.enabled),
            mkldnn_bf16=_call(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)),
            mkldnn_fp16=_call(getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", None)),
        )
    return info


def _call(fn) -> bool:
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # an op missing from this build: treat as unsupported
        return False


def tf32_flags() -> dict:
    return {
        "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def run_metadata(device: torch.device) -> dict:
    dev = device_info(device)
    git = git_commit()
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.isoformat(timespec="seconds"),
        "device": dev,
        "gpu_name": dev["name"] if device.type == "cuda" else None,
        "sm_count": dev.get("sm_count"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": package_version("triton"),
        "fastrnn": _fastrnn_version() or package_version("fastrnn"),  # the code that ran, checkout or not
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git["commit"],
        "git_dirty": git["dirty"],
        "tf32": tf32_flags(),
        "load_average": _load_average(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "fastrnn_backend_env": os.environ.get("FASTRNN_BACKEND"),
    }


def _fastrnn_version() -> Optional[str]:
    try:
        import fastrnn
        return fastrnn.__version__
    except Exception:
        return None


def _load_average() -> Optional[list]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
