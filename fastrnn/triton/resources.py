"""Compile the Triton kernels for a GPU that is not here, and report what each one uses.

Triton can compile ahead of time for a named target (``GPUTarget("cuda", 90, 32)`` = H100)
without a GPU: frontend, TTGIR, PTX and ptxas all run on the CPU. That checks the compiled path
(which the CPU interpreter never takes) and gives the real resource usage per kernel — registers,
spill stack and shared memory — which is what limits the hidden size (see capacity.py; a block
may use at most 227 KB of shared memory on H100).

    python -m fastrnn.triton.resources            # the configurations at the capacity limits
    python -m fastrnn.triton.resources --quick    # two small ones (used by the tests)

Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled); ``main`` clears
it before importing the kernels.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from .capacity import block_size
from ..cells import CELLS
from .cell_ids import kernel_constants

H100_SMEM_PER_BLOCK = 227 * 1024  # bytes a block may use on sm_90 (of 228 KB per SM)
_FP32_BUFFERS = ("saved_ptr", "hbuf_ptr", "cbuf_ptr", "dhbuf_ptr", "dcbuf_ptr")
_TYPES = {"float32": "*fp32", "bfloat16": "*bf16", "float16": "*fp16"}


def compile_kernel(kernel, cell: str, dtype: str, hidden: int, block_hs=None, arch: int = 90, num_warps=None,
                   fma_ks=None):
    """Compile one kernel for sm_``arch`` in the shape the launch gives it (launch.kernel_shape:
    warps, and the forward's FMA_KS), or with ``num_warps`` / ``fma_ks`` given;
    -> dict(regs, stack, smem, seconds, num_warps, fma_ks)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    block_h = block_size(hidden)
    consts = dict(
        H=hidden, **kernel_constants(CELLS[cell]), REVERSE=False, BLOCK_B=16,
        BLOCK_H=block_h, DOT_PRECISION="ieee" if dtype == "float32" else "tf32", WIDEN_WEIGHTS=False,
    )
    if block_hs is not None:
        consts.update(BLOCK_HS=block_hs, BARRIER=True)
    from .launch import kernel_shape  # (imports Triton: not before TRITON_INTERPRET is settled)

    fma = dtype == "float32"  # DOT_PRECISION "ieee" above: the FMA dot
    backward_warps, forward_warps, shape_ks = kernel_shape(block_hs is not None, block_h, block_hs or block_h,
                                                           CELLS[cell].num_gates, fma)
    forward = "FMA_KS" in kernel.arg_names
    if forward:
        consts.update(FMA_KS=shape_ks if fma_ks is None else fma_ks)
    signature = {}
    for name in kernel.arg_names:
        if name in consts:
            signature[name] = "constexpr"
        elif name in _FP32_BUFFERS:  # (hdot_ptr is in the weights' dtype)
            signature[name] = "*fp32"
        elif name in ("len_ptr", "counter_ptr", "stall_ptr"):
            signature[name] = "*i32"
        elif name.endswith("_ptr"):
            signature[name] = _TYPES[dtype]
        else:
            signature[name] = "i32"
    # The JIT marks every pointer argument whose address is a multiple of 16 (all of these:
    # fresh torch allocations and their row views) with tt.divisibility=16, which lets it
    # vectorise loads and changes how it stages tiles through shared memory; measure with the
    # same attributes, or the numbers are not the launched kernel's.
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
             for name, ty in signature.items() if ty.startswith("*")}
    if num_warps is None:
        num_warps = forward_warps if forward else backward_warps
    start = time.time()
    compiled = triton_compile(
        ASTSource(kernel, signature, consts, attrs), target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}
    )
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    regs = stack = None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        if os.path.exists(cuobjdump):
            usage = subprocess.run([cuobjdump, "-res-usage", cubin.name], capture_output=True, text=True).stdout
            match = re.search(r"REG:(\d+)\s+STACK:(\d+)", usage)
            if match:
                regs, stack = int(match.group(1)), int(match.group(2))
    return dict(regs=regs, stack=stack, smem=compiled.metadata.shared, seconds=time.time() - start,
                num_warps=num_warps, fma_ks=consts.get("FMA_KS"))


QUICK = [("small", "lstm", "float32", 40), ("large", "gru", "bfloat16", 40)]
AT_CAPACITY = [  # (regime, cell, dtype, hidden): the largest sizes capacity.py admits
    ("small", "rnn_tanh", "float32", 128), ("small", "rnn_tanh", "bfloat16", 256),
    ("small", "gru", "float32", 64), ("small", "gru", "bfloat16", 128),
    ("small", "lstm", "float32", 64), ("small", "lstm", "bfloat16", 64),
    ("large", "rnn_tanh", "float32", 1024), ("large", "rnn_tanh", "bfloat16", 2048),
    ("large", "gru", "float32", 512), ("large", "gru", "bfloat16", 1024),
    ("large", "lstm", "float32", 512), ("large", "lstm", "bfloat16", 1024), ("large", "lstm", "float16", 1024),
]
# The fp32 large-H kernels below capacity: their FMA dots spilled there (up to 5.6 KB) when only
# the capacity sizes were checked (launch.kernel_shape).
FP32_BELOW_CAPACITY = [
    ("large", "rnn_tanh", "float32", 256), ("large", "gru", "float32", 128), ("large", "gru", "float32", 256),
    ("large", "lstm", "float32", 128), ("large", "lstm", "float32", 256),
]
CHECKED = AT_CAPACITY + FP32_BELOW_CAPACITY


def run(configs, arch: int = 90):
    """Compiles both kernels of each (regime, cell, dtype, hidden) in ``configs`` for sm_``arch``;
    yields per kernel a dict: the ``compile_kernel`` record plus ``kernel``, ``cell``, ``dtype``,
    ``hidden``, ``fits`` (shared memory within a block's limit) and ``text`` (one printable line)."""
    from .backward import recurrent_backward_kernel
    from .forward import recurrent_forward_kernel
    from .large_h import sliced_backward_kernel, sliced_forward_kernel

    kernels = {"small": (recurrent_forward_kernel, recurrent_backward_kernel),
               "large": (sliced_forward_kernel, sliced_backward_kernel)}
    for regime, cell, dtype, hidden in configs:
        for kernel in kernels[regime]:
            r = compile_kernel(kernel, cell, dtype, hidden, 16 if regime == "large" else None, arch)
            r.update(kernel=kernel.fn.__name__, cell=cell, dtype=dtype, hidden=hidden)
            r["fits"] = r["smem"] <= H100_SMEM_PER_BLOCK
            r["text"] = (f"{kernel.fn.__name__:26s} {cell:8s} {dtype:8s} H={hidden:<5d} warps={r['num_warps']} "
                         f"fma_ks={r['fma_ks'] or '-'} regs={r['regs']} spill_stack={r['stack']}B smem={r['smem'] / 1024:.0f}KB"
                         f"{'' if r['fits'] else ' > 227KB: WILL NOT LAUNCH'} ({r['seconds']:.1f}s)")
            yield r


def main(argv=None) -> int:
    os.environ.pop("TRITON_INTERPRET", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    too_big = 0
    for r in run(QUICK if args.quick else CHECKED, args.arch):
        too_big += not r["fits"]
        print(r["text"], flush=True)
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main())
