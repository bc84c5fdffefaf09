"""Imported first by the Triton test files: where there is no GPU, they run the kernels in
Triton's CPU interpreter, which Triton reads when a kernel is defined (so before any fastrnn
Triton module is imported). Skips the importing module when Triton is missing, or when there is
no GPU and TRITON_INTERPRET is set to something other than 1.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from fastrnn.triton import backend as _triton_backend  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and not _triton_backend.interpreting():
    pytest.skip("no GPU and TRITON_INTERPRET is set to something other than 1", allow_module_level=True)

from fastrnn.triton import autograd as _triton_autograd  # noqa: E402  (imports Triton)

from kernel_helpers import FP32_TOL  # noqa: E402,F401  (re-exported for the Triton test files)


@pytest.fixture(autouse=True)
def poison_and_ieee(monkeypatch):
    """NaN-poisoned kernel outputs (autograd.POISON) and IEEE fp32 matmuls (no TF32), for every
    test of a module that imports this fixture."""
    monkeypatch.setattr(_triton_autograd, "POISON", True)
    tf32 = torch.backends.cuda.matmul.allow_tf32  # a property: monkeypatch cannot restore it
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = tf32
