"""Suite-wide test settings.

Most tests check fastrnn's own code against torch.nn: they run on the reference backend, named
through FASTRNN_BACKEND, because ``auto`` on the CPU runs torch's own kernels (backend "torch"),
and a comparison of torch.nn with itself could not fail. Tests of ``auto`` itself and of the
torch backend clear or set the variable themselves (tests/test_backends.py,
tests/test_torch_backend.py).
"""

import pytest

from fastrnn import backends


@pytest.fixture(autouse=True)
def _reference_backend_by_default(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "reference")


@pytest.fixture
def auto_backend(monkeypatch):
    """For tests of what ``auto`` picks: no FASTRNN_BACKEND."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
