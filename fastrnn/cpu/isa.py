"""Which instruction-set build of the CPU kernels runs (csrc/cpu/isa_*.cpp).

By default the best one this CPU supports (checked at run time by the extension: AVX-512 F/DQ/
BW/VL, else AVX2 + FMA, else portable), so one build runs correctly on older x86 CPUs.
``FASTRNN_CPU_ISA=avx512|avx2|portable`` forces one (the tests run each on a CPU that has
them); forcing one this CPU lacks makes backend "cpu" unavailable, with that reason.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

ENV_VAR = "FASTRNN_CPU_ISA"
# In the extension's isa id order (csrc/cpu/host.cpp ISAS).
ISAS = ("portable", "avx2", "avx512")


@functools.lru_cache(maxsize=1)
def supported() -> Tuple[str, ...]:
    """Instruction sets this CPU runs (needs the extension)."""
    from fastrnn import _cpu

    return tuple(_cpu.supported_isas())


def _requested() -> Optional[str]:
    return os.environ.get(ENV_VAR, "").strip().lower() or None


def unavailable() -> Optional[str]:
    """Why the requested instruction set cannot run here (None: it can)."""
    name = _requested()
    if name is None:
        return None
    if name not in ISAS:
        return f"{ENV_VAR} must be one of {', '.join(ISAS)}, got {name!r}"
    if name not in supported():
        return f"{ENV_VAR}={name} but this CPU supports only {', '.join(supported())}"
    return None


def current() -> str:
    """The instruction set the kernels run with now (call unavailable() first)."""
    name = _requested()
    if name is not None:
        if unavailable() is not None:
            raise RuntimeError(unavailable())
        return name
    return supported()[-1]


def isa_id(name: str) -> int:
    return ISAS.index(name)
