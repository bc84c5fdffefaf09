#!/usr/bin/env bash
# The GPU check: ONE command, at most 8 minutes on a 16-core H100/H200, at most 8 files in OUT_DIR,
# each appended to as it goes, so a timeout still returns everything done before it. The plan,
# the steps' order and their time budget are explained in bench/GPU_CHECK.md.
#
#   bash bench/gpu_check.sh --stamp                  here, before the device run: records the commit
#                                                    in bench/gpu_check.stamp (the device gets files,
#                                                    no .git; pass the stamp in the run's carry)
#   bash bench/gpu_check.sh OUT_DIR                  on the device (the device tool: "$OUT")
#   bash bench/gpu_check.sh OUT_DIR --dry-run        prints the plan and budgets, runs nothing
#   bash bench/gpu_check.sh OUT_DIR --steps a,b      runs only the named steps
#   bash bench/gpu_check.sh OUT_DIR --skip-passed P  a second run: skips the steps that passed in the
#                                                    earlier run's folder P (its summary.txt) and, in
#                                                    the pytest steps, the tests that passed (its XML)
#
# For a GPU machine with PyTorch (CUDA build), Triton, nvcc, ninja and pytest preinstalled and no
# network: nothing is installed. fastrnn is used from this checkout (PYTHONPATH). Knobs:
#   PYTHON              interpreter (default: python3)
#   CUDA_HOME           CUDA toolkit (default: from nvcc on PATH)
#   GPU_CHECK_COMMIT    the commit to record (else bench/gpu_check.stamp, else git, else unknown)
#   GPU_CHECK_BUDGET_S  the whole check's deadline in seconds (default: 470)
#   GPU_CHECK_DRY_RUN=1 same as --dry-run
# Files in OUT_DIR: summary.txt (one line per step: status, seconds, budget), environment.txt,
# log.txt (every step's output), kernel_timing.jsonl, correct_triton.xml, correct_cuda.xml,
# bench_targets.json, gpu_tests.xml: 8. The exit status is non-zero if any step failed or ran out of time.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
STAMP_FILE="$REPO/bench/gpu_check.stamp"
DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
DEADLINE="${GPU_CHECK_BUDGET_S:-470}"  # seconds from the start; the device tool's 8 minutes less slack
PYTHON="${PYTHON:-python3}"
ONLY="" SKIP_PASSED="" OUT_ARG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --steps) ONLY=",$2,"; shift ;;
        --steps=*) ONLY=",${1#--steps=},";;
        --skip-passed) SKIP_PASSED="$2"; shift ;;
        --skip-passed=*) SKIP_PASSED="${1#--skip-passed=}" ;;
        --stamp)
            sha="$(git -C "$REPO" rev-parse HEAD)" || { echo "gpu_check: --stamp needs a git checkout" >&2; exit 2; }
            dirty="$(git -C "$REPO" status --porcelain --untracked-files=no | grep -c .)"
            diff_id="$(git -C "$REPO" diff HEAD | sha1sum | cut -c1-12)"
            echo "$sha dirty=$dirty diff=$diff_id stamped=$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$STAMP_FILE"
            echo "gpu_check: wrote $STAMP_FILE: $(cat "$STAMP_FILE")"
            exit 0 ;;
        -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUT_ARG="$1" ;;
    esac
    shift
done
STEPS="cpp_mma cpp_persistent kernel_timing correct_triton correct_cuda bench_targets gpu_tests"
for s in ${ONLY//,/ }; do
    [[ " $STEPS " == *" $s "* ]] || { echo "gpu_check: unknown step $s (steps: $STEPS)" >&2; exit 2; }
done
if [ -n "$SKIP_PASSED" ] && [ ! -f "$SKIP_PASSED/summary.txt" ]; then
    echo "gpu_check: --skip-passed $SKIP_PASSED has no summary.txt of an earlier run" >&2
    exit 2
fi
[ -n "$SKIP_PASSED" ] && SKIP_PASSED="$(cd "$SKIP_PASSED" && pwd)"

# The commit this run tests, and where that was read from: the variable, the stamp, git.
commit_line() {
    if [ -n "${GPU_CHECK_COMMIT:-}" ]; then
        echo "$GPU_CHECK_COMMIT (from GPU_CHECK_COMMIT)"
    elif [ -f "$STAMP_FILE" ]; then
        echo "$(head -n1 "$STAMP_FILE") (from bench/gpu_check.stamp)"
    elif sha="$(git -C "$REPO" rev-parse HEAD 2>/dev/null)"; then
        echo "$sha dirty=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -c .) (from git)"
    else
        echo "unknown (no GPU_CHECK_COMMIT, no bench/gpu_check.stamp, no .git)"
    fi
}

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
export FASTRNN_CUDA_ARCHS="${FASTRNN_CUDA_ARCHS:-90a}" MAX_JOBS="${MAX_JOBS:-16}"
unset TRITON_INTERPRET

if [ "$DRY_RUN" = 1 ]; then
    OUT_DIR="${OUT_ARG:-${TMPDIR:-/tmp}}"
else
    OUT_DIR="${OUT_ARG:-${OUT:-bench/results/gpu_check_$(date -u +%Y%m%d-%H%M%S)}}"
    mkdir -p "$OUT_DIR"
fi
OUT_DIR="$(cd "$OUT_DIR" 2>/dev/null && pwd || echo "$OUT_DIR")"
SUMMARY="$OUT_DIR/summary.txt"
LOG="$OUT_DIR/log.txt"
WORK="$(mktemp -d)"  # binaries and the background builds' logs stay out of OUT_DIR
trap 'rm -rf "$WORK"' EXIT
FAILED=0
PLANNED=0  # dry run: the sum of the budgets

say() { echo "$*" | tee -a "$SUMMARY"; }
selected() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }
passed_before() { [ -n "$SKIP_PASSED" ] && awk -v n="$1" '$1 == n && $2 == "ok" {f = 1} END {exit !f}' "$SKIP_PASSED/summary.txt"; }
# pytest options of a step: the per-test limit, and the earlier run's passes to deselect.
pytest_opts() {  # NAME PER_TEST_S
    local opts="-p bench.pytest_gpu_check --per-test-timeout $2 -o junit_family=xunit2 --junitxml=$OUT_DIR/$1.xml"
    [ -n "$SKIP_PASSED" ] && [ -f "$SKIP_PASSED/$1.xml" ] && opts="$opts --skip-passed-junit $SKIP_PASSED/$1.xml"
    echo "$opts"
}

# Background jobs (the extension build and the stand-alone CUDA programs compile at once, on all
# cores): bg NAME TIMEOUT COMMAND... ; await NAME waits for it and returns its exit status.
bg() {
    local name="$1" limit="$2"; shift 2
    if [ "$DRY_RUN" = 1 ]; then
        printf 'background %-14s timeout=%4ss  %s\n' "$name" "$limit" "$*"
        return 0
    fi
    ( timeout "$limit" "$@" > "$WORK/$name.log" 2>&1; echo $? > "$WORK/$name.rc" ) &
    echo $! > "$WORK/$name.pid"
}
await() {
    [ "$DRY_RUN" = 1 ] && return 0
    [ -f "$WORK/$1.pid" ] || return 1
    wait "$(cat "$WORK/$1.pid")" 2>/dev/null
    local rc; rc="$(cat "$WORK/$1.rc" 2>/dev/null || echo 1)"
    if [ ! -f "$WORK/$1.logged" ]; then
        { echo "== background $1: rc=$rc, log tail:"; tail -30 "$WORK/$1.log"; } >> "$LOG"
        touch "$WORK/$1.logged"
    fi
    return "$rc"
}

# step NAME BUDGET_S [--after JOB] COMMAND...: runs COMMAND under a timeout of BUDGET_S, cut to
# what is left before DEADLINE (SIGINT first, so pytest and fastrnn-bench write what they have),
# appends its output to log.txt and a status line to summary.txt. --after JOB: first waits for the
# background job JOB (inside the same budget) and fails the step if JOB failed.
step() {
    local name="$1" budget="$2"; shift 2
    local after=""
    if [ "${1:-}" = --after ]; then after="$2"; shift 2; fi
    if ! selected "$name"; then
        [ "$DRY_RUN" = 1 ] && printf 'step %-16s not selected (--steps)\n' "$name"
        return 0
    fi
    if passed_before "$name"; then
        if [ "$DRY_RUN" = 1 ]; then printf 'step %-16s passed before (--skip-passed)\n' "$name"
        else say "$(printf '%-16s PASSED-BEFORE (in %s)' "$name" "$SKIP_PASSED")"; fi
        return 0
    fi
    local left=$((DEADLINE - SECONDS))
    [ "$budget" -gt "$left" ] && budget="$left"
    if [ "$DRY_RUN" = 1 ]; then
        PLANNED=$((PLANNED + budget))
        printf 'step %-16s budget=%4ss%s  %s\n' "$name" "$budget" "${after:+ (after $after)}" "$*"
        return 0
    fi
    if [ "$budget" -lt 5 ]; then
        say "$(printf '%-16s SKIPPED  out of time (%ss left)' "$name" "$left")"
        FAILED=1
        return 0
    fi
    local start=$SECONDS status=ok rc=0
    if [ -n "$after" ] && ! await "$after"; then
        status="FAIL ($after failed)"
    else
        local rest=$((budget - (SECONDS - start)))
        [ "$rest" -lt 1 ] && rest=1
        echo "== $name (budget ${budget}s, ${rest}s after waiting, t=${SECONDS}s): $*" >> "$LOG"
        timeout --signal=INT --kill-after=15 "$rest" "$@" >> "$LOG" 2>&1
        rc=$?
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=TIMEOUT; elif [ "$rc" -ne 0 ]; then status="FAIL rc=$rc"; fi
    fi
    [ "$status" = ok ] || FAILED=1
    say "$(printf '%-16s %-9s %4ss of %4ss  t=%4ss' "$name" "$status" "$((SECONDS - start))" "$budget" "$SECONDS")"
}

NVCC_FLAGS="-std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Ikernels -Itests/cpp"
if [ "$DRY_RUN" = 1 ]; then
    echo "commit: $(commit_line)"
    head_sha="$(git -C "$REPO" rev-parse HEAD 2>/dev/null)"
    if [ -z "${GPU_CHECK_COMMIT:-}" ] && [ -f "$STAMP_FILE" ] && [ -n "$head_sha" ] && \
       [ "$(cut -d' ' -f1 "$STAMP_FILE")" != "$head_sha" ]; then
        echo "WARNING: bench/gpu_check.stamp names another commit than HEAD ($head_sha): run --stamp again"
    fi
    echo "environment -> environment.txt"
else
    : > "$SUMMARY"
    : > "$LOG"
    # --- environment (seconds) ------------------------------------------------------------------
    if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
        TOP="$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1)"
        if [ -n "$TOP" ] && [ -d "$TOP" ]; then CUDA_HOME="$(cd "$TOP" && pwd -P)"
        else CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"; fi
        export CUDA_HOME
    fi
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit: $(commit_line)"
        echo "CUDA_HOME=${CUDA_HOME:-unset} FASTRNN_CUDA_ARCHS=$FASTRNN_CUDA_ARCHS nproc=$(nproc)"
        echo "steps: ${ONLY:-all} skip-passed: ${SKIP_PASSED:-none}"
        nvidia-smi 2>&1 | head -20
        "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version 2>&1 | tail -2
        "$PYTHON" -c 'import torch, triton, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda,
"cudnn", torch.backends.cudnn.version(), "triton", triton.__version__, "numpy", numpy.__version__);
p = torch.cuda.get_device_properties(0); print(p.name, p.multi_processor_count, "SMs", p.total_memory >> 20, "MiB")' 2>&1
    } > "$OUT_DIR/environment.txt" 2>&1
    say "commit $(commit_line), deadline ${DEADLINE}s"
fi
# --- builds, all at once in the background: the extension (minutes; needed from correct_cuda on) and
# the three stand-alone CUDA programs (seconds each; each step below waits for its own) ------------
NEED_EXT=0
for s in correct_cuda bench_targets gpu_tests; do selected "$s" && ! passed_before "$s" && NEED_EXT=1; done
[ "$NEED_EXT" = 1 ] && bg build 300 "$PYTHON" setup.py build_ext --inplace
for job in cpp_mma:tests/cpp/test_mma.cu cpp_persistent:tests/cpp/test_persistent.cu kernel_timing:bench/kernel_timing.cu; do
    prog="${job#*:}" name="$(basename "${job#*:}" .cu)"
    selected "${job%%:*}" && ! passed_before "${job%%:*}" && bg "nvcc_$name" 240 nvcc $NVCC_FLAGS "$prog" -o "$WORK/$name"
done

# --- the mma fragment layouts: everything else rests on them ------------------------------------
step cpp_mma 30 --after nvcc_test_mma "$WORK/test_mma"
# --- the persistent CUDA kernels against a float64 CPU loop (H=768 splits, several passes) ------
step cpp_persistent 60 --after nvcc_test_persistent "$WORK/test_persistent"
# --- kernel-only timings: target shape, B=256, the block-count sweep, then the other cells ------
step kernel_timing 80 --after nvcc_kernel_timing "$WORK/kernel_timing" "$OUT_DIR/kernel_timing.jsonl"
# --- correctness of both backends at the target shapes vs float64 (Triton first: no build) ------
CORRECT="(test_sequence_1024 or test_lengths_both_directions) and bfloat16 or test_sequence_1024 and lstm-float32"
step correct_triton 90 "$PYTHON" -m pytest tests/test_kernels_at_scale.py -q -k "triton and ($CORRECT)" \
    $(pytest_opts correct_triton 40)
step correct_cuda 50 --after build "$PYTHON" -m pytest tests/test_kernels_at_scale.py -q -k "cuda and ($CORRECT)" \
    $(pytest_opts correct_cuda 20)
# --- the targets preset against torch.nn (cuDNN bf16 and fp16), side by side --------------------
step bench_targets 100 --after build "$PYTHON" -m fastrnn.bench --preset targets --backends torch.nn,auto,triton,cuda --strict \
    --repeats 20 --warmup 3 --output "$OUT_DIR/bench_targets.json"
# --- the rest of the GPU tests (CPU-only tests are not rerun here) ------------------------------
GPU_FILES="tests/test_cuda_backend.py tests/test_cuda_graphs.py tests/test_build.py tests/test_autocast.py tests/test_triton_backend.py tests/test_triton_launch.py tests/test_kernels_at_scale.py"
XDIST="$("$PYTHON" -c 'import xdist' >/dev/null 2>&1 && echo "-n 8")"  # Triton compiles in parallel
step gpu_tests 60 --after build "$PYTHON" -m pytest $GPU_FILES -q $XDIST -k "not ($CORRECT)" $(pytest_opts gpu_tests 30)

if [ "$DRY_RUN" = 1 ]; then
    echo "planned: ${PLANNED}s of steps within the ${DEADLINE}s deadline (8 minutes = 480s)"
    echo "files: summary.txt environment.txt log.txt kernel_timing.jsonl correct_triton.xml correct_cuda.xml bench_targets.json gpu_tests.xml"
    exit 0
fi
say "done at t=${SECONDS}s: $( [ "$FAILED" = 0 ] && echo 'ALL STEPS PASSED' || echo 'SOME STEPS FAILED')"
echo "== summary ($OUT_DIR)"; cat "$SUMMARY"
exit "$FAILED"
