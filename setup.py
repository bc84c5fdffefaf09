"""Build fastrnn: pure Python always; the CUDA extension fastrnn._C and the CPU extension
fastrnn._cpu (backend "cpu") when they can be built.

Environment:
  FASTRNN_BUILD_CUDA   auto (default): build when torch is a CUDA build and nvcc is found;
                       1: build or fail; 0: never build.
  FASTRNN_BUILD_CPU    auto (default): build fastrnn._cpu wherever torch and a GCC or Clang
                       compiler are present (no CUDA needed); 1: build or fail; 0: never build.
  FASTRNN_CUDA_ARCHS   semicolon-separated SM architectures, default "80;90a".
  CUDA_HOME            the CUDA toolkit; when unset it is read from nvcc itself (the folder
                       holding `nvcc` may be a wrapper, not the toolkit).
  MAX_JOBS             parallel compile jobs; default sized to cores and memory (~4 GiB a job).

Build the extension in place (e.g. on a GPU machine without network):
  python setup.py build_ext --inplace

With auto, a machine that cannot build an extension (no CUDA build of torch, no nvcc, a source
tree without kernels/ or csrc/, no GCC/Clang) gets fastrnn without it: the reason is printed (pip
shows it with -v) and written to fastrnn/_build_info.py, where the "cuda" and "cpu" backends'
unavailability messages read it.
"""

import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["csrc/bindings.cpp", "csrc/probe.cu", "csrc/rnn_forward.cu", "csrc/rnn_backward.cu"]
# The CPU extension: recurrence.h compiled once per instruction set (each file sets its target).
CPU_SOURCES = ["csrc/cpu/host.cpp", "csrc/cpu/isa_avx512.cpp", "csrc/cpu/isa_avx2.cpp", "csrc/cpu/isa_portable.cpp"]
BUILD_INFO = os.path.join(ROOT, "fastrnn", "_build_info.py")


def _log(msg):
    print(f"fastrnn setup: {msg}", file=sys.stderr)


# Commands that build or install the package (pip runs bdist_wheel / editable_wheel); an sdist
# or metadata query must not overwrite the record of the last real build in this tree.
BUILD_COMMANDS = {"build", "build_ext", "build_py", "bdist_wheel", "editable_wheel", "develop", "install"}


# What fastrnn/_build_info.py records: why each extension was not built (None: it was), and the
# torch the CPU extension was compiled against (importing it into another torch can crash).
_SKIPPED = {"CUDA_EXTENSION_SKIPPED": None, "CPU_EXTENSION_SKIPPED": None, "CPU_EXTENSION_TORCH": None}


def _record(skipped, name="CUDA_EXTENSION_SKIPPED"):
    """Write why an extension was not built (None: it was) for fastrnn's error messages."""
    _SKIPPED[name] = skipped
    if not BUILD_COMMANDS.intersection(sys.argv[1:]):
        return
    try:
        with open(BUILD_INFO, "w") as f:
            f.write("# Written by setup.py when fastrnn was built; not in git or the sdist.\n")
            for key, value in _SKIPPED.items():
                f.write(f"{key} = {value!r}\n")
    except OSError:  # a read-only source tree: the messages then give no build-time reason
        pass


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
        _record("FASTRNN_BUILD_CUDA=0 was set when fastrnn was built")
        return [], {}

    def skip(reason, loud=False):
        if mode == "1":
            raise SystemExit(f"FASTRNN_BUILD_CUDA=1 but the CUDA extension cannot be built: {reason}")
        _record(reason)
        if loud:  # a machine that may well want CUDA kernels deserves more than one line in a log
            bar = "*" * 78
            _log(f"\n{bar}\n  NOT building fastrnn's CUDA extension: {reason}.\n"
                 f"  backend='cuda' will be unavailable (the reference and triton backends work).\n"
                 f"  FASTRNN_BUILD_CUDA=1 makes this an error.\n{bar}")
        else:
            _log(f"not building the CUDA extension: {reason}")
        return [], {}

    try:
        import torch
    except ImportError:
        return skip("torch is not importable in the build environment (pip builds in an isolated "
                    "environment unless given --no-build-isolation)", loud=True)
    if torch.version.cuda is None:
        return skip(f"torch {torch.__version__} is not a CUDA build")
    # An sdist or copy without the CUDA sources: skip (auto) rather than fail in the compiler.
    missing = [path for path in ["kernels"] + SOURCES if not os.path.exists(os.path.join(ROOT, path))]
    if missing:
        return skip(f"this source tree lacks {', '.join(missing)}", loud=True)
    nvcc = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return skip(f"torch {torch.__version__} is a CUDA build but nvcc was not found "
                    f"(set CUDA_HOME or put nvcc on PATH)", loud=True)
    if not os.environ.get("CUDA_HOME"):
        home = _cuda_home_from_nvcc(nvcc)
        if home is None:
            return skip(f"could not read the toolkit folder from `{nvcc} --dryrun`", loud=True)
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
    _record(None)
    ext = CUDAExtension(
        name="fastrnn._C",
        sources=SOURCES,
        include_dirs=[os.path.join(ROOT, "kernels"), os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": ["-O3"] + define,
                            "nvcc": ["-O3", "--expt-relaxed-constexpr"] + define + gencode},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


def cpu_extensions():
    """fastrnn._cpu: torch's CppExtension, no CUDA toolkit needed."""
    mode = os.environ.get("FASTRNN_BUILD_CPU", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"FASTRNN_BUILD_CPU must be auto, 0 or 1, got {mode!r}")

    def skip(reason):
        if mode == "1":
            raise SystemExit(f"FASTRNN_BUILD_CPU=1 but the CPU extension cannot be built: {reason}")
        _record(reason, "CPU_EXTENSION_SKIPPED")
        _log(f"not building the CPU extension: {reason}")
        return []

    if mode == "0":
        return skip("FASTRNN_BUILD_CPU=0 was set when fastrnn was built")
    try:
        import torch  # noqa: F401
    except ImportError:
        return skip("torch is not importable in the build environment (pip builds in an isolated "
                    "environment unless given --no-build-isolation)")
    missing = [path for path in CPU_SOURCES if not os.path.exists(os.path.join(ROOT, path))]
    if missing:
        return skip(f"this source tree lacks {', '.join(missing)}")
    if sys.platform == "win32":  # the kernels use GCC/Clang vector extensions
        return skip("building the CPU extension needs GCC or Clang (MSVC is not supported)")
    from torch.utils.cpp_extension import CppExtension

    flags = ["-O3", "-ffp-contract=fast"]  # fused multiply-adds: one rounding, as torch's GEMMs
    link = []
    if sys.platform.startswith("linux"):  # at::parallel_for on torch's OpenMP threads
        flags.append("-fopenmp")
        link.append("-fopenmp")
    _SKIPPED["CPU_EXTENSION_TORCH"] = torch.__version__
    _record(None, "CPU_EXTENSION_SKIPPED")
    _log("building fastrnn._cpu (AVX-512, AVX2 and portable paths, chosen at run time)")
    return [CppExtension(name="fastrnn._cpu", sources=CPU_SOURCES, extra_compile_args=flags,
                         extra_link_args=link)]


ext_modules, cmdclass = cuda_extensions()
cpu_modules = cpu_extensions()
if cpu_modules and not cmdclass:
    from torch.utils.cpp_extension import BuildExtension

    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}
setup(ext_modules=ext_modules + cpu_modules, cmdclass=cmdclass)
