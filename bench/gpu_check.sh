#!/usr/bin/env bash
# GPU check: run the C++ GPU tests of kernels/, build the CUDA extension in place, run the test
# suite, run the `default` and `targets` benchmark presets; logs and result files go into one
# folder.
#
#   bash bench/gpu_check.sh [OUT_DIR]        (or OUT=DIR bash bench/gpu_check.sh)
#
# For a GPU machine with PyTorch (CUDA build), Triton, ninja and pybind11 preinstalled and NO
# network: nothing is installed from the network. fastrnn is used from this checkout through
# PYTHONPATH (no pip install). Environment knobs:
#   PYTHON               interpreter (default: python3)
#   CUDA_HOME            CUDA toolkit; when unset it is taken from `nvcc` on PATH
#   FASTRNN_CUDA_ARCHS   SM architectures to build (default: this GPU's, e.g. 90a on an H100)
#   PYTEST_ARGS          test selection (default: the whole suite, `tests`)
#   STEPS                which groups to run, of: cpp build tests bench (default: all four). The
#                        device tool allows 10 minutes a command: e.g. STEPS="cpp build tests" in
#                        one call and STEPS="build bench" (the build is incremental) in the next.
#   BENCH_ARGS           extra flags for both benchmark runs (e.g. "--repeats 50")
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed,
# and summary.txt lists each step's status. The benchmarks run with --strict: a fastrnn row whose
# error against the float64 reference is above tolerance, or a backend that fails, fails the step
# (the result files are written either way).
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT_DIR="${1:-${OUT:-bench/results/gpu_check_$(date -u +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PIP_NO_INDEX=1            # belt and braces: nothing below may reach a package index
export PYTHONUNBUFFERED=1
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
FAILED=0

want() {  # want GROUP -> whether STEPS asks for it
    case " ${STEPS:-cpp build tests bench} " in *" $1 "*) return 0 ;; esac
    return 1
}

step() {  # step NAME COMMAND...  -> runs it, logs to NAME.log, records status
    local name="$1"; shift
    local start=$SECONDS
    echo "== $name: $*" | tee -a "$OUT_DIR/$name.log"
    "$@" >> "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    local line
    line="$(printf '%-14s rc=%-3s %5ss  %s' "$name" "$rc" "$((SECONDS - start))" "$*")"
    echo "$line" | tee -a "$SUMMARY"
    [ "$rc" -eq 0 ] || FAILED=1
    return 0
}

# --- environment ------------------------------------------------------------------------------
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
    NVCC="$(command -v nvcc)"
    # nvcc may be a wrapper; its --dryrun output names the real toolkit as TOP.
    TOP="$("$NVCC" --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1)"
    if [ -n "$TOP" ] && [ -d "$TOP" ]; then
        CUDA_HOME="$(cd "$TOP" && pwd -P)"
    else
        CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$NVCC")")")"
    fi
    export CUDA_HOME
fi
if [ -z "${FASTRNN_CUDA_ARCHS:-}" ]; then
    ARCH="$("$PYTHON" -c 'import torch; M, m = torch.cuda.get_device_capability(); print(f"{M}{m}" + ("a" if M == 9 else ""))' 2>/dev/null)"
    [ -n "$ARCH" ] && export FASTRNN_CUDA_ARCHS="$ARCH"
fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "repo: $REPO  commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "CUDA_HOME=${CUDA_HOME:-unset}  FASTRNN_CUDA_ARCHS=${FASTRNN_CUDA_ARCHS:-unset}"
    nvidia-smi 2>&1 || echo "nvidia-smi not found"
    if [ -n "${CUDA_HOME:-}" ]; then "$CUDA_HOME/bin/nvcc" --version 2>&1; fi
    "$PYTHON" - <<'PY'
import importlib.metadata as md, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("triton", "ninja", "pybind11", "numpy", "pytest", "matplotlib"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
PY
} > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt"

# --- build, test, benchmark -------------------------------------------------------------------
# The C++ GPU tests of kernels/ first (nvcc only, no CMake needed): the tensor-core fragment
# layouts (test_mma), then the persistent kernels against a CPU loop (test_persistent).
if want cpp && [ -n "${CUDA_HOME:-}" ]; then
    CPP_ARCH="${FASTRNN_CUDA_ARCHS%%;*}"
    BIN_DIR="$(mktemp -d)"  # binaries stay out of the results folder
    for t in mma persistent; do
        step "cpp_$t" bash -c "'$CUDA_HOME/bin/nvcc' -std=c++17 -O2 -arch=sm_${CPP_ARCH:-90a} -Ikernels -Itests/cpp \
            tests/cpp/test_$t.cu -o '$BIN_DIR/test_$t' && '$BIN_DIR/test_$t'"
    done
fi
if want build; then
    step build      "$PYTHON" setup.py build_ext --inplace
    step import     "$PYTHON" -c "import fastrnn; print('backends:', fastrnn.registered_backends())"
fi
if want tests; then
    # shellcheck disable=SC2086
    step tests      "$PYTHON" -m pytest ${PYTEST_ARGS:-tests} -ra --junitxml="$OUT_DIR/tests.xml"
fi
if want bench; then
    # shellcheck disable=SC2086
    step bench_default  "$PYTHON" -m fastrnn.bench --preset default --strict ${BENCH_ARGS:-} \
        --output "$OUT_DIR/bench_default.json" --csv "$OUT_DIR/bench_default.csv"
    # shellcheck disable=SC2086
    step bench_targets "$PYTHON" -m fastrnn.bench --preset targets --strict ${BENCH_ARGS:-} \
        --output "$OUT_DIR/bench_targets.json" --csv "$OUT_DIR/bench_targets.csv"
    if "$PYTHON" -c "import matplotlib" >/dev/null 2>&1; then
        step plot "$PYTHON" -m fastrnn.bench plot "$OUT_DIR"/bench_*.json --out "$OUT_DIR/plots"
    fi
fi

echo "results in $OUT_DIR"
cat "$SUMMARY"
exit "$FAILED"
