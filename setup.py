"""Build fastrnn: pure Python always; the CUDA extension fastrnn._C when it can be built.

Environment:
  FASTRNN_BUILD_CUDA   auto (default): build when torch is a CUDA build and nvcc is found;
                       1: build or fail; 0: never build.
  FASTRNN_CUDA_ARCHS   semicolon-separated SM architectures, default "80;90a".
  CUDA_HOME            the CUDA toolkit; when unset it is read from nvcc itself (the folder
                       holding `nvcc` may be a wrapper, not the toolkit).
  MAX_JOBS             parallel compile jobs; default sized to cores and memory (~4 GiB a job).

Build the extension in place (e.g. on a GPU machine without network):
  python setup.py build_ext --inplace
"""

import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(msg):
    print(f"fastrnn setup: {msg}", file=sys.stderr)


def _cuda_home_from_nvcc(nvcc):
    """The toolkit nvcc really runs from: `nvcc --dryrun` prints it as TOP."""
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.MULTILINE)
    return os.path.realpath(match.group(1).strip()) if match else None


def _default_jobs():
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 8
    return max(1, min(os.cpu_count() or 1, int(mem_gib // 4)))


def _gencode(arch):
    number = arch.rstrip("af")
    return [f"-gencode=arch=compute_{arch},code=sm_{arch}"] if number.isdigit() else None


def cuda_extensions():
    mode = os.environ.get("FASTRNN_BUILD_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"FASTRNN_BUILD_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return [], {}

    def skip(reason):
        if mode == "1":
            raise SystemExit(f"FASTRNN_BUILD_CUDA=1 but the CUDA extension cannot be built: {reason}")
        _log(f"not building the CUDA extension: {reason}")
        return [], {}

    try:
        import torch
    except ImportError:
        return skip("torch is not importable in the build environment (use --no-build-isolation)")
    if torch.version.cuda is None:
        return skip(f"torch {torch.__version__} is not a CUDA build")
    nvcc = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    if not os.environ.get("CUDA_HOME"):
        home = _cuda_home_from_nvcc(nvcc)
        if home is None:
            return skip(f"could not read the toolkit folder from `{nvcc} --dryrun`")
        os.environ["CUDA_HOME"] = home  # must be set before torch.utils.cpp_extension is imported
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    archs = [a for a in os.environ.get("FASTRNN_CUDA_ARCHS", "80;90a").replace(",", ";").split(";") if a]
    gencode = []
    for arch in archs:
        flags = _gencode(arch.strip())
        if flags is None:
            raise SystemExit(f"FASTRNN_CUDA_ARCHS entries look like 80 or 90a, got {arch!r}")
        gencode += flags
    os.environ.setdefault("MAX_JOBS", str(_default_jobs()))
    _log(f"building fastrnn._C for sm_{', sm_'.join(archs)} with CUDA_HOME={os.environ['CUDA_HOME']}, "
         f"MAX_JOBS={os.environ['MAX_JOBS']}")
    define = [f'-DFASTRNN_CUDA_ARCHS="{";".join(archs)}"']
    ext = CUDAExtension(
        name="fastrnn._C",
        sources=["csrc/bindings.cpp", "csrc/probe.cu", "csrc/rnn_forward.cu", "csrc/rnn_backward.cu"],
        include_dirs=[os.path.join(ROOT, "kernels"), os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": ["-O3"] + define,
                            "nvcc": ["-O3", "--expt-relaxed-constexpr"] + define + gencode},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = cuda_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
