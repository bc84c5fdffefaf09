"""Which kernel family torch.nn runs a configuration on: a documented re-statement of torch's rules.

torch does not expose its choice, so this module re-states the rules, read from PyTorch's
sources, and the benchmark prints the result next to every torch.nn row (design.md §5: we must
say which cuDNN path a row is up against). It is an approximation; the reasons it may be wrong
are listed with each rule.

On a CUDA GPU (``aten/src/ATen/native/cudnn/RNN.cpp``, ``get_algo``, as in current torch; the small-H
rule has been there since torch 1.12):

1. ``proj_size != 0`` -> standard. Packed input with varying lengths -> standard (the benchmark
   never packs).
2. dtype not float64 and the *small-H* rule holds -> ``persistent-small-h``
   (``CUDNN_RNN_ALGO_PERSIST_STATIC_SMALL_H``): compute capability >= 6.0 and, for the forward,
   H <= 384 (Elman) or H <= 192 (LSTM, GRU); for the backward H <= 256 (Elman) or H <= 128
   (LSTM, GRU). The forward and backward of one training step may therefore differ.
3. float16 only, and the *common* rule (``_use_persist_common_heuristics``: one layer, one
   direction, H <= 1024, H and input_size multiples of 128) and the *device* rule
   (``_use_persist_device_heuristics``) -> ``persistent`` (``CUDNN_RNN_ALGO_PERSIST_STATIC``).
   Device rule: sm_75 never; other sm_7x: batch 8 or a multiple of 16 except 80 and 112, with
   (T >= 40 and B <= 128) or (T >= 20 and B <= 96) or (T >= 10 and B <= 32); sm_8x/sm_9x and
   later with at least 98 SMs (A100 108, H100 SXM 132, H100 PCIe 114; *not* A30/A40/L40 class,
   and sm_86 never): never for GRU; LSTM when B % 8 == 0 and B <= 128; Elman when additionally
   B < 96 or H < 896. (design.md §5 paraphrases the SM bound; torch's threshold is 98.)
4. otherwise ``standard`` (cuDNN's GEMM-per-step algorithm).

Whether cuDNN runs at all: torch uses cuDNN for float32, float16 and float64, and for bfloat16
when ``supportsBFloat16RNNWithCuDNN()`` holds, approximated here as cuDNN >= 8.0 on sm_80+;
otherwise torch.nn falls back to its native CUDA cell loop.

On the CPU (``aten/src/ATen/native/RNN.cpp``, ``use_mkldnn``): the LSTM runs on oneDNN when
mkldnn is enabled and the dtype is float32, bfloat16 on a CPU with bf16 support, or float16 on
a CPU with fp16 support in inference only; every other case (GRU, Elman, other dtypes) runs
torch's native ATen cell loop (one GEMM for the input projection, a GEMM per step).
"""

from __future__ import annotations

from typing import Optional, Tuple


def small_h(cell: str, hidden_size: int, major: int, forward: bool) -> bool:
    if major < 6:
        return False
    elman = cell.startswith("rnn_")
    if forward:
        return hidden_size <= (384 if elman else 192)
    return hidden_size <= (256 if elman else 128)


def persist_common(layers: int, bidirectional: bool, hidden_size: int, input_size: int) -> bool:
    return (layers == 1 and not bidirectional and hidden_size <= 1024 and hidden_size % 128 == 0
            and input_size % 128 == 0)


def persist_device(cell: str, batch: int, seq_len: int, hidden_size: int, major: int, minor: int,
                   sm_count: int) -> bool:
    if major == 7:
        if minor == 5:
            return False
        return (((batch % 16 == 0 and batch not in (80, 112)) or batch == 8)
                and ((seq_len >= 40 and batch <= 128) or (seq_len >= 20 and batch <= 96)
                     or (seq_len >= 10 and batch <= 32)))
    if major >= 8 and sm_count >= 98:
        if minor == 6:
            return False
        if cell == "gru":
            return False
        if cell == "lstm":
            return batch % 8 == 0 and batch <= 128
        return batch % 8 == 0 and batch <= 128 and (batch < 96 or hidden_size < 896)
    return False


def cudnn_algorithm(config, capability: Tuple[int, int], sm_count: int, forward: bool,
                    cudnn_version: Optional[int]) -> str:
    """``persistent-small-h`` | ``persistent`` | ``standard`` | ``native CUDA (no cuDNN)``."""
    major, minor = capability
    if cudnn_version is None:
        return "native CUDA (no cuDNN)"
    if config.dtype == "bfloat16" and not (cudnn_version >= 8000 and major >= 8):
        return "native CUDA (no cuDNN for bf16 here)"
    if config.dtype != "float64" and small_h(config.cell, config.hidden_size, major, forward):
        return "persistent-small-h"
    if (config.dtype == "float16"
            and persist_common(config.layers, config.bidirectional, config.hidden_size, config.input_size)
            and persist_device(config.cell, config.batch, config.seq_len, config.hidden_size,
                               major, minor, sm_count)):
        return "persistent"
    return "standard"


def cpu_path(config, training: bool, mkldnn_enabled: bool, bf16_ok: bool, fp16_ok: bool) -> str:
    if config.cell == "lstm" and mkldnn_enabled:
        if (config.dtype == "float32" or (config.dtype == "bfloat16" and bf16_ok)
                or (config.dtype == "float16" and fp16_ok and not training)):
            return "CPU oneDNN LSTM"
    return "CPU native ATen loop"


def torch_path(config, device_info: dict, training: bool) -> str:
    """The torch.nn kernel family for ``config`` in one human-readable string."""
    if device_info["type"] == "cuda":
        cap = tuple(device_info["capability"])
        cudnn = device_info.get("cudnn_version") if device_info.get("cudnn_enabled") else None
        fwd = cudnn_algorithm(config, cap, device_info["sm_count"], True, cudnn)
        if not training:
            return f"cuDNN {fwd}" if not fwd.startswith("native") else fwd
        bwd = cudnn_algorithm(config, cap, device_info["sm_count"], False, cudnn)
        if fwd.startswith("native"):
            return fwd
        return f"cuDNN {fwd}" if fwd == bwd else f"cuDNN fwd {fwd}, bwd {bwd}"
    return cpu_path(config, training, device_info.get("mkldnn_enabled", False),
                    device_info.get("mkldnn_bf16", False), device_info.get("mkldnn_fp16", False))
