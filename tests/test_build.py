"""The CUDA extension fastrnn._C and the CPU extension fastrnn._cpu: built and importable
wherever they can be built.

fastrnn._cpu needs only torch and GCC/Clang, so setup.py builds it on every Linux or macOS
install unless FASTRNN_BUILD_CPU=0.

setup.py builds it when torch is a CUDA build and nvcc is found (FASTRNN_BUILD_CUDA=auto) or
must build it (FASTRNN_BUILD_CUDA=1, as in CI). On a GPU the build probe kernel also runs.
"""

import importlib.util
import os
import shutil
import sys

import pytest
import torch

# FASTRNN_BUILD_CUDA=0 (setup.py's switch for a pure-Python install) says the extension was not
# built on purpose, e.g. in a second environment beside the one that built it.
CAN_BUILD = (torch.version.cuda is not None and (shutil.which("nvcc") or os.environ.get("CUDA_HOME"))
             and os.environ.get("FASTRNN_BUILD_CUDA") != "0")
MUST_BUILD = os.environ.get("FASTRNN_BUILD_CUDA") == "1"


@pytest.mark.skipif(not (CAN_BUILD or MUST_BUILD), reason="no CUDA build of torch, no nvcc, or FASTRNN_BUILD_CUDA=0: the extension is not built here")
def test_extension_imports_with_its_architectures():
    assert importlib.util.find_spec("fastrnn._C") is not None, "fastrnn._C was not built (see setup.py log)"
    from fastrnn import _C

    archs = _C.cuda_archs.split(";")
    assert archs and all(a.rstrip("af").isdigit() for a in archs), _C.cuda_archs


@pytest.mark.skipif(os.environ.get("FASTRNN_BUILD_CPU") == "0" or sys.platform == "win32",
                    reason="FASTRNN_BUILD_CPU=0 or Windows: fastrnn._cpu is not built here")
def test_cpu_extension_imports_with_portable_path():
    assert importlib.util.find_spec("fastrnn._cpu") is not None, "fastrnn._cpu was not built (see setup.py log)"
    from fastrnn import _cpu

    assert "portable" in _cpu.supported_isas()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to launch the probe kernel")
def test_probe_kernel_runs_on_gpu():
    from fastrnn import _C

    out = torch.full((100_003,), float("nan"), device="cuda")
    _C.probe_iota(out)
    torch.testing.assert_close(out.cpu(), torch.arange(100_003, dtype=torch.float32))


@pytest.mark.skipif(not (CAN_BUILD or MUST_BUILD), reason="extension not built here")
def test_probe_rejects_bad_input_with_a_clear_message():
    from fastrnn import _C

    with pytest.raises(RuntimeError, match="expected a CUDA tensor"):
        _C.probe_iota(torch.zeros(3))
