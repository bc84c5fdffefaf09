#!/usr/bin/env bash
# The GPU check: ONE command, at most 8 minutes on a 16-core H200, at most 8 files in OUT_DIR,
# each appended to as it goes, so a timeout still returns everything done before it. The plan,
# the steps' order and their time budget are explained in bench/GPU_CHECK.md.
#
#   bash bench/gpu_check.sh OUT_DIR              (the device tool: bash bench/gpu_check.sh "$OUT")
#   GPU_CHECK_DRY_RUN=1 bash bench/gpu_check.sh  prints the steps and budgets, runs nothing
#
# For a GPU machine with PyTorch (CUDA build), Triton, nvcc, ninja and pytest preinstalled and no
# network: nothing is installed. fastrnn is used from this checkout (PYTHONPATH). Knobs:
#   PYTHON              interpreter (default: python3)
#   CUDA_HOME           CUDA toolkit (default: from nvcc on PATH)
#   GPU_CHECK_BUDGET_S  the whole check's deadline in seconds (default: 470)
# Files in OUT_DIR: summary.txt (one line per step: status, seconds, budget), environment.txt,
# log.txt (every step's output), kernel_timing.jsonl, correct_triton.xml, correct_cuda.xml,
# bench_targets.json, gpu_tests.xml: 8. The exit status is non-zero if any step failed or ran out of time.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
DEADLINE="${GPU_CHECK_BUDGET_S:-470}"  # seconds from the start; the device tool's 8 minutes less slack
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
export FASTRNN_CUDA_ARCHS="${FASTRNN_CUDA_ARCHS:-90a}" MAX_JOBS="${MAX_JOBS:-16}"
unset TRITON_INTERPRET

if [ "$DRY_RUN" = 1 ]; then
    OUT_DIR="${1:-${TMPDIR:-/tmp}}"
else
    OUT_DIR="${1:-${OUT:-bench/results/gpu_check_$(date -u +%Y%m%d-%H%M%S)}}"
fi
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
LOG="$OUT_DIR/log.txt"
WORK="$(mktemp -d)"  # binaries and the background build's log stay out of OUT_DIR
trap 'rm -rf "$WORK"' EXIT
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME BUDGET_S COMMAND...: runs COMMAND under a timeout of BUDGET_S, cut to what is left
# before DEADLINE (SIGINT first, so pytest and fastrnn-bench write what they have), appends its
# output to log.txt and a status line to summary.txt.
step() {
    local name="$1" budget="$2"; shift 2
    local left=$((DEADLINE - SECONDS))
    [ "$budget" -gt "$left" ] && budget="$left"
    if [ "$DRY_RUN" = 1 ]; then
        printf 'step %-16s budget=%4ss  %s\n' "$name" "$budget" "$*"
        return 0
    fi
    if [ "$budget" -lt 5 ]; then
        say "$(printf '%-16s SKIPPED  out of time (%ss left)' "$name" "$left")"
        FAILED=1
        return 0
    fi
    local start=$SECONDS
    echo "== $name (budget ${budget}s, t=${SECONDS}s): $*" >> "$LOG"
    timeout --signal=INT --kill-after=15 "$budget" "$@" >> "$LOG" 2>&1
    local rc=$?
    local status=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=TIMEOUT; elif [ "$rc" -ne 0 ]; then status="FAIL rc=$rc"; fi
    [ "$status" = ok ] || FAILED=1
    say "$(printf '%-16s %-9s %4ss of %4ss  t=%4ss' "$name" "$status" "$((SECONDS - start))" "$budget" "$SECONDS")"
}

NVCC_FLAGS="-std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Ikernels -Itests/cpp"

if [ "$DRY_RUN" != 1 ]; then
    : > "$SUMMARY"
    : > "$LOG"
    # --- 1. environment (seconds) -------------------------------------------------------------
    if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
        TOP="$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1)"
        if [ -n "$TOP" ] && [ -d "$TOP" ]; then CUDA_HOME="$(cd "$TOP" && pwd -P)"
        else CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"; fi
        export CUDA_HOME
    fi
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" \
             "dirty: $(git -C "$REPO" status --porcelain 2>/dev/null | grep -c .)"
        echo "CUDA_HOME=${CUDA_HOME:-unset} FASTRNN_CUDA_ARCHS=$FASTRNN_CUDA_ARCHS nproc=$(nproc)"
        nvidia-smi 2>&1 | head -20
        "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version 2>&1 | tail -2
        "$PYTHON" -c 'import torch, triton, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda,
"cudnn", torch.backends.cudnn.version(), "triton", triton.__version__, "numpy", numpy.__version__);
p = torch.cuda.get_device_properties(0); print(p.name, p.multi_processor_count, "SMs", p.total_memory >> 20, "MiB")' 2>&1
    } > "$OUT_DIR/environment.txt" 2>&1
    say "commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown), deadline ${DEADLINE}s"
    # --- 2. the extension build, in the background (minutes; nothing before step 6 needs it) ---
    ( timeout 300 "$PYTHON" setup.py build_ext --inplace > "$WORK/build.log" 2>&1; echo $? > "$WORK/build.rc" ) &
    BUILD_PID=$!
else
    echo "environment -> environment.txt; extension build in the background (timeout 300s)"
fi

# --- 3. the mma fragment layouts: everything else rests on them --------------------------------
step cpp_mma 45 bash -c "nvcc $NVCC_FLAGS tests/cpp/test_mma.cu -o $WORK/test_mma && $WORK/test_mma"
# --- 4. the persistent CUDA kernels against a float64 CPU loop (H=768 splits, several passes) --
step cpp_persistent 90 bash -c "nvcc $NVCC_FLAGS tests/cpp/test_persistent.cu -o $WORK/test_persistent && $WORK/test_persistent"
# --- 5. kernel-only timings: empty-barrier floor, full step, and parts dropped -----------------
step kernel_timing 60 bash -c "nvcc $NVCC_FLAGS bench/kernel_timing.cu -o $WORK/kernel_timing && $WORK/kernel_timing $OUT_DIR/kernel_timing.jsonl"
# --- 6. correctness of both backends at the target shapes vs float64 (Triton first: no build) --
CORRECT="(test_sequence_1024 or test_lengths_both_directions) and bfloat16 or test_sequence_1024 and lstm-float32"
step correct_triton 100 "$PYTHON" -m pytest tests/test_kernels_at_scale.py -q -k "triton and ($CORRECT)" \
    -o junit_family=xunit2 --junitxml="$OUT_DIR/correct_triton.xml"
if [ "$DRY_RUN" != 1 ]; then
    wait "$BUILD_PID"
    say "$(printf '%-16s %-9s t=%4ss' build "$( [ "$(cat "$WORK/build.rc" 2>/dev/null)" = 0 ] && echo ok || echo "FAIL rc=$(cat "$WORK/build.rc" 2>/dev/null)")" "$SECONDS")"
    [ "$(cat "$WORK/build.rc" 2>/dev/null)" = 0 ] || FAILED=1
    { echo "== build (background) log tail:"; tail -40 "$WORK/build.log"; } >> "$LOG"
fi
step correct_cuda 50 "$PYTHON" -m pytest tests/test_kernels_at_scale.py -q -k "cuda and ($CORRECT)" \
    -o junit_family=xunit2 --junitxml="$OUT_DIR/correct_cuda.xml"
# --- 7. the targets preset against torch.nn (cuDNN bf16 and fp16), side by side ----------------
step bench_targets 110 "$PYTHON" -m fastrnn.bench --preset targets --backends torch.nn,auto,triton,cuda --strict \
    --repeats 20 --warmup 3 --output "$OUT_DIR/bench_targets.json"
# --- 8. the rest of the GPU tests (CPU-only tests are not rerun here) ---------------------------
GPU_FILES="tests/test_cuda_backend.py tests/test_cuda_graphs.py tests/test_build.py tests/test_autocast.py tests/test_triton_backend.py tests/test_triton_launch.py tests/test_kernels_at_scale.py"
XDIST="$("$PYTHON" -c 'import xdist' >/dev/null 2>&1 && echo "-n 8")"  # Triton compiles in parallel
step gpu_tests 600 "$PYTHON" -m pytest $GPU_FILES -q $XDIST -k "not ($CORRECT)" \
    -o junit_family=xunit2 --junitxml="$OUT_DIR/gpu_tests.xml"

if [ "$DRY_RUN" = 1 ]; then
    echo "files: summary.txt environment.txt log.txt kernel_timing.jsonl correct_triton.xml correct_cuda.xml bench_targets.json gpu_tests.xml"
    exit 0
fi
say "done at t=${SECONDS}s: $( [ "$FAILED" = 0 ] && echo 'ALL STEPS PASSED' || echo 'SOME STEPS FAILED')"
echo "== summary ($OUT_DIR)"; cat "$SUMMARY"
exit "$FAILED"
