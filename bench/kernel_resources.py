"""Registers and spills of the compiled persistent kernels, read off the sm_90a build; fails on
any spill.

A kernel that spills keeps some of its per-thread values in local memory (an L1/L2 round trip
per reload, inside the time loop). ptxas decides this at build time, so it can be checked
without a GPU: for every kernel in the given binaries (default: the CMake build's
test_persistent, which instantiates the forward and backward kernel of every cell and dtype),
this reads

  cuobjdump -res-usage   REG (registers per thread), STACK (bytes of the local-memory frame:
                         spill slots), LOCAL
  cuobjdump -sass        STL / LDL instructions (the spill stores and reloads themselves) and
                         the instruction count

and exits 1 if any kernel has STACK or LOCAL > 0 or an STL / LDL. With --triton it also
compiles the Triton kernels ahead of time for sm_90 (fastrnn/triton/resources.py) at the
largest sizes capacity.py admits (and the fp32 large-H sizes below them) and fails on any spill
stack there.

    cmake -S . -B build/cmake -DCMAKE_CUDA_ARCHITECTURES=90a && cmake --build build/cmake
    python bench/kernel_resources.py                    # CI runs this after the build
    python bench/kernel_resources.py --triton           # + the Triton kernels (CI; minutes)

cuobjdump comes from PATH, $CUDA_HOME/bin, or the copy Triton ships (triton/backends/nvidia/bin).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, Iterable, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARIES = [os.path.join(ROOT, "build", "cmake", "test_persistent")]

_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):?\s*$")
_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_SASS_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)\s*$")
_SASS_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]+)?")


def find_cuobjdump() -> Optional[str]:
    """cuobjdump from $CUOBJDUMP, PATH, $CUDA_HOME/bin or Triton's bundled copy; None if absent."""
    candidates = [os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "cuobjdump"))
    # Triton's folder without importing it: an import here, before a test session sets
    # TRITON_INTERPRET, would build Triton's own jit functions (tl.sum, ...) for the GPU.
    spec = importlib.util.find_spec("triton")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(os.path.join(folder, "backends", "nvidia", "bin", "cuobjdump"))
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def parse_res_usage(text: str) -> Dict[str, Dict[str, int]]:
    """``cuobjdump -res-usage`` output -> {mangled name: {regs, stack, shared, local}}.

    Each kernel is a ``Function NAME:`` line followed by a ``REG:.. STACK:.. SHARED:.. LOCAL:..``
    line. A name seen twice (two architectures in one binary) keeps the larger of each value."""
    out: Dict[str, Dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        m = _FUNCTION.match(line)
        if m:
            name = m.group(1)
            continue
        m = _USAGE.search(line)
        if m and name is not None:
            usage = dict(zip(("regs", "stack", "shared", "local"), map(int, m.groups())))
            prev = out.get(name)
            out[name] = usage if prev is None else {k: max(prev[k], usage[k]) for k in usage}
            name = None
    return out


def parse_sass(text: str) -> Dict[str, Dict[str, int]]:
    """``cuobjdump -sass`` output -> {mangled name: {instructions, stl, ldl}}: the instruction
    count and the spill stores (STL) and reloads (LDL) of each function."""
    out: Dict[str, Dict[str, int]] = {}
    cur = None
    for line in text.splitlines():
        m = _SASS_FUNCTION.match(line)
        if m:
            cur = out.setdefault(m.group(1), dict(instructions=0, stl=0, ldl=0))
            continue
        if cur is None:
            continue
        m = _SASS_INSTRUCTION.search(line)
        if m:
            cur["instructions"] += 1
            op = m.group(1)
            if op == "STL":
                cur["stl"] += 1
            elif op == "LDL":
                cur["ldl"] += 1
    return out


def spills(usage: Dict[str, int]) -> bool:
    """Whether a kernel's resource record shows local memory in use (a spill)."""
    return any(usage.get(k, 0) > 0 for k in ("stack", "local", "stl", "ldl"))


def short_name(mangled: str) -> str:
    """persistent_forward_kernel<LstmCell, __nv_bfloat16> from the mangled name (c++filt if
    present; the mangled name otherwise)."""
    filt = shutil.which("c++filt")
    if filt is None:
        return mangled
    name = subprocess.run([filt, mangled], capture_output=True, text=True).stdout.strip() or mangled
    name = re.sub(r"^void\s+", "", name)
    name = re.sub(r"\(.*\)$", "", name)  # the argument list repeats the template arguments
    return name.replace("fastrnn::", "")


def read_binaries(paths: Iterable[str], cuobjdump: str) -> Dict[str, Dict[str, int]]:
    """Resource usage and SASS counts of every kernel in ``paths``, merged per kernel."""
    kernels: Dict[str, Dict[str, int]] = {}
    for path in paths:
        usage = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True, check=True).stdout
        counts = parse_sass(sass)
        for name, u in parse_res_usage(usage).items():
            kernels[name] = dict(u, **counts.get(name, dict(instructions=0, stl=0, ldl=0)))
    return kernels


def report(kernels: Dict[str, Dict[str, int]]) -> List[str]:
    """Prints one line per kernel; returns the names of those that spill."""
    bad = []
    for name in sorted(kernels, key=short_name):
        k = kernels[name]
        flag = spills(k)
        bad += [name] if flag else []
        print(f"{'SPILL' if flag else 'ok   '} regs={k['regs']:3d} stack={k['stack']:4d}B local={k['local']}B "
              f"STL={k['stl']:3d} LDL={k['ldl']:3d} sass={k['instructions']:5d}  {short_name(name)}", flush=True)
    return bad


def triton_spills(records=None) -> int:
    """Compiles the Triton kernels for sm_90 at the sizes fastrnn.triton.resources.CHECKED names
    (capacity, and the fp32 large-H sizes below it), in the launch's shape (launch.kernel_shape),
    or takes ``records`` of that form (the tests); -> how many spill (a kernel whose stack could
    not be read counts). Needs TRITON_INTERPRET unset (``main``)."""
    if records is None:
        sys.path.insert(0, ROOT)
        from fastrnn.triton import resources

        records = resources.run(resources.CHECKED)
    bad = 0
    for r in records:
        over = r["stack"] is None or r["stack"] > 0
        bad += over
        print(f"{'SPILL' if over else 'ok   '} {r['text']}", flush=True)
    print(f"Triton: {bad} spilling")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="*", default=DEFAULT_BINARIES,
                        help="executables or object files holding the kernels (default: %(default)s)")
    parser.add_argument("--triton", action="store_true", help="also compile the Triton kernels for sm_90 and check them")
    args = parser.parse_args(argv)
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        print("kernel_resources: no cuobjdump (PATH, $CUDA_HOME/bin or Triton's copy); cannot check", file=sys.stderr)
        return 2
    missing = [p for p in args.binaries if not os.path.exists(p)]
    if missing:
        print(f"kernel_resources: {', '.join(missing)} not built; run cmake --build build/cmake first", file=sys.stderr)
        return 2
    kernels = read_binaries(args.binaries, cuobjdump)
    if not kernels:
        print(f"kernel_resources: no kernels found in {', '.join(args.binaries)}", file=sys.stderr)
        return 2
    bad = report(kernels)
    print(f"CUDA: {len(kernels)} kernels, {len(bad)} spilling")
    if args.triton:
        os.environ.pop("TRITON_INTERPRET", None)  # interpreted kernels cannot be compiled
        bad += ["triton"] * triton_spills()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
