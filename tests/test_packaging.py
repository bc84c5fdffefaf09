"""Packaging: the sdist carries everything a build needs and installs (without network) into a
working fastrnn; setup.py skips the CUDA extension with a reason (auto) or fails (1); the
reason reaches the "cuda" backend's message; Triton is an extra, not a dependency."""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import fastrnn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists(),
                                reason="needs the git checkout of fastrnn (builds its sdist)")
NEEDED = ["LICENSE", "MANIFEST.in", "README.md", "pyproject.toml", "setup.py", "CMakeLists.txt", "fastrnn/py.typed"]


def _source_files():
    """Files git tracks or would track (untracked, not ignored): what a checkout holds."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the checkout (builds write egg-info and records into their source tree)."""
    dst = tmp_path_factory.mktemp("src") / "fastrnn"
    for f in _source_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    return dst


def _run(args, cwd, **env):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONNOUSERSITE": "1", **env})


@pytest.fixture(scope="module")
def sdist(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run = _run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(out)], tree, FASTRNN_BUILD_CUDA="0")
    assert run.returncode == 0, run.stderr
    (path,) = out.glob("fastrnn-*.tar.gz")
    return path


def test_sdist_has_everything_a_build_needs(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        pkg_info = tar.extractfile(f"fastrnn-{fastrnn.__version__}/PKG-INFO").read().decode()
    tracked = _source_files()
    needed = NEEDED + [f for f in tracked if f.split("/")[0] in ("kernels", "csrc", "fastrnn")
                       or f.startswith("tests/cpp/")]
    assert not [f for f in needed if f not in names], "missing from the sdist"
    assert not [n for n in names if n.endswith((".so", ".pyc")) or n == "fastrnn/_build_info.py"]
    assert f"Version: {fastrnn.__version__}" in pkg_info
    requires = [line for line in pkg_info.splitlines() if line.startswith("Requires-Dist:")]
    triton = [line for line in requires if "triton" in line]
    assert triton and all('extra == "triton"' in line for line in triton), requires


def test_install_from_sdist_without_network(sdist, tmp_path):
    """pip builds and installs the sdist offline (torch from this environment); the installed
    package imports outside the checkout, carries py.typed, records why it has no _C, and works
    without Triton (an extra), naming the extra when backend='triton' is asked for."""
    target = tmp_path / "site"
    run = _run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
                "--quiet", "--target", str(target), str(sdist)], tmp_path, FASTRNN_BUILD_CUDA="0",
               FASTRNN_BUILD_CPU="0", PIP_NO_CACHE_DIR="1")
    assert run.returncode == 0, run.stdout + run.stderr
    check = (
        # An editable install of the checkout (make's `pip install -e .`) would serve fastrnn's
        # submodules missing from the target (fastrnn._C) from the checkout: not in a fresh venv.
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        "sys.modules['triton'] = None\n"  # as if absent
        "import fastrnn, torch, pathlib\n"
        "from fastrnn.cuda.backend import unavailable\n"
        "print(pathlib.Path(fastrnn.__file__).parent)\n"
        "print(fastrnn.__version__)\n"
        "print(fastrnn.LSTM(2, 3)(torch.randn(4, 1, 2))[0].shape)\n"
        "print(unavailable())\n"
        "from fastrnn.cpu.backend import unavailable\n"
        "print(unavailable())\n"
        "try:\n"
        "    fastrnn.LSTM(2, 3, backend='triton')(torch.randn(4, 1, 2))\n"
        "except fastrnn.BackendError as e:\n"
        "    print(e)\n"
    )
    run = _run([sys.executable, "-c", check], tmp_path, PYTHONPATH=str(target))
    assert run.returncode == 0, run.stderr
    where, version, shape, why, why_cpu, triton = run.stdout.strip().splitlines()
    assert Path(where) == target / "fastrnn" and (target / "fastrnn" / "py.typed").is_file()
    assert version == fastrnn.__version__ and shape == "torch.Size([4, 1, 3])"
    assert "not built: FASTRNN_BUILD_CUDA=0 was set" in why and "FASTRNN_BUILD_CUDA=1 pip install" in why
    assert "no CPU extension fastrnn._cpu (not built: FASTRNN_BUILD_CPU=0 was set" in why_cpu
    assert "triton cannot be imported" in triton and "fastrnn[triton]" in triton


def test_setup_without_cuda_sources(tree, tmp_path):
    """auto skips with the reason printed, 1 fails saying why: never a compiler error."""
    bare = tmp_path / "bare"
    shutil.copytree(tree, bare, ignore=shutil.ignore_patterns("kernels", "*.egg-info"))
    auto = _run([sys.executable, "setup.py", "--version"], bare, FASTRNN_BUILD_CUDA="auto")
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.strip().splitlines()[-1] == fastrnn.__version__
    if torch.version.cuda is None:
        assert "is not a CUDA build" in auto.stderr
        return
    assert "NOT building fastrnn's CUDA extension: this source tree lacks kernels" in auto.stderr
    must = _run([sys.executable, "setup.py", "--version"], bare, FASTRNN_BUILD_CUDA="1")
    assert must.returncode != 0
    assert "FASTRNN_BUILD_CUDA=1 but the CUDA extension cannot be built: this source tree lacks kernels" in must.stderr
