"""bench/gpu_check.sh is well-formed and fits the device tool's limits (bench/GPU_CHECK.md):
valid bash, the steps in order of value, the prioritised steps' budgets within the deadline,
at most 8 result files. Runs the script's dry run, which executes nothing."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
ORDER = ["cpp_mma", "cpp_persistent", "kernel_timing", "correct_triton", "correct_cuda", "bench_targets",
         "gpu_tests"]


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_plan(tmp_path):
    env = dict(os.environ, GPU_CHECK_DRY_RUN="1")
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    steps = re.findall(r"^step (\S+)\s+budget=\s*(\d+)s", done.stdout, re.M)
    assert [name for name, _ in steps] == ORDER
    budgets = {name: int(b) for name, b in steps}
    # Every step but the last (which takes what is left) fits the deadline together.
    assert sum(budgets[name] for name in ORDER[:-1]) <= 470 < 480
    files = re.search(r"^files: (.*)$", done.stdout, re.M).group(1).split()
    assert len(files) <= 8 and {"summary.txt", "bench_targets.json", "kernel_timing.jsonl"} <= set(files)
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_each_step_runs_under_a_timeout():
    text = SCRIPT.read_text()
    assert 'timeout --signal=INT' in text  # SIGINT first: pytest and fastrnn-bench keep what they have
    assert "--preset targets" in text and "torch.nn,auto,triton,cuda" in text
