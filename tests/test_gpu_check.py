"""bench/gpu_check.sh is well-formed and fits the device tool's limits (bench/GPU_CHECK.md):
valid bash, the steps in order of value, every step's budget within the deadline (< 8 minutes
in all), at most 8 result files, the commit recorded without a .git directory, the step filter
and the second run that repeats nothing that passed; and its pytest plugin
(bench/pytest_gpu_check.py): the per-test time limit and the deselection of earlier passes.
The real runs here use a stand-in interpreter (a shell script), so nothing needs a GPU."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
ORDER = ["cpp_mma", "cpp_persistent", "kernel_timing", "correct_triton", "correct_cuda", "bench_targets",
         "gpu_tests"]
DEADLINE = 470


def _run(*args, cwd=None, script=SCRIPT, env=None, check=True):
    extra, env = env or {}, dict(os.environ)
    env.pop("GPU_CHECK_COMMIT", None)
    env.update(extra)
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120, check=check, cwd=cwd)


def _steps(stdout):
    return {name: int(b) for name, b in re.findall(r"^step (\S+)\s+budget=\s*(\d+)s", stdout, re.M)}


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_plan(tmp_path):
    done = _run(tmp_path, "--dry-run")
    steps = re.findall(r"^step (\S+)\s+budget=", done.stdout, re.M)
    assert steps == ORDER
    budgets = _steps(done.stdout)
    # Every step, the last included, fits the deadline together, and the deadline is under 8 minutes.
    assert sum(budgets.values()) <= DEADLINE < 480
    assert f"planned: {sum(budgets.values())}s" in done.stdout
    files = re.search(r"^files: (.*)$", done.stdout, re.M).group(1).split()
    assert len(files) <= 8 and {"summary.txt", "bench_targets.json", "kernel_timing.jsonl"} <= set(files)
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_each_step_runs_under_a_timeout():
    text = SCRIPT.read_text()
    assert 'timeout --signal=INT' in text  # SIGINT first: pytest and fastrnn-bench keep what they have
    assert "--preset targets" in text and "torch.nn,auto,triton,cuda" in text
    assert text.count("$(pytest_opts ") == 3  # every pytest step has the per-test limit


def test_commit_from_variable_stamp_or_nothing(tmp_path):
    """The device gets files, not the repository: the commit comes from GPU_CHECK_COMMIT or the
    stamp written by --stamp here; without either (and no .git) it says unknown."""
    copy = tmp_path / "repo"
    (copy / "bench").mkdir(parents=True)
    shutil.copy(SCRIPT, copy / "bench" / "gpu_check.sh")
    script = copy / "bench" / "gpu_check.sh"
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}  # no repository above the copy either
    assert "commit: unknown" in _run("--dry-run", script=script, env=env).stdout
    assert "commit: abc123 (from GPU_CHECK_COMMIT)" in _run(
        "--dry-run", script=script, env=dict(env, GPU_CHECK_COMMIT="abc123")).stdout
    # --stamp needs git: here it refuses; in the real checkout it writes the stamp.
    assert _run("--stamp", script=script, env=env, check=False).returncode == 2
    (copy / "bench" / "gpu_check.stamp").write_text("0123abcd dirty=0 diff=x stamped=now\n")
    out = _run("--dry-run", script=script, env=env).stdout
    assert "commit: 0123abcd dirty=0 diff=x stamped=now (from bench/gpu_check.stamp)" in out


def test_stamp_in_the_checkout(tmp_path):
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                                                     capture_output=True).returncode != 0:
        import pytest

        pytest.skip("no git checkout")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    copy = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(copy)], check=True, timeout=120)
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", head], check=True)
    shutil.copy(SCRIPT, copy / "bench" / "gpu_check.sh")  # this checkout's script, even if uncommitted
    _run("--stamp", script=copy / "bench" / "gpu_check.sh")
    stamp = (copy / "bench" / "gpu_check.stamp").read_text()
    assert stamp.startswith(head + " dirty=")


def test_step_filter_and_unknown_steps(tmp_path):
    out = _run(tmp_path, "--dry-run", "--steps", "cpp_mma,gpu_tests").stdout
    assert list(_steps(out)) == ["cpp_mma", "gpu_tests"]
    assert "nvcc_test_mma" in out and "nvcc_test_persistent" not in out  # only what the steps need is built
    bad = _run(tmp_path, "--dry-run", "--steps", "cpp_mma,bogus", check=False)
    assert bad.returncode == 2 and "unknown step bogus" in bad.stderr


def _stand_in_python(tmp_path, fail_on=""):
    """A PYTHON for the script that runs nothing: for pytest it writes a JUnit file with one
    passing test; then it fails when its arguments contain ``fail_on``."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
echo "stand-in python $*"
for a in "$@"; do case "$a" in --junitxml=*) x="${{a#--junitxml=}}"
  echo '<testsuites><testsuite><testcase classname="tests.test_x" name="test_ok"/></testsuite></testsuites>' > "$x";;
esac; done
case "$*" in *"{fail_on or '@@never@@'}"*) exit 3 ;; esac
exit 0
""")
    fake.chmod(0o755)
    return str(fake)


def test_real_run_records_and_second_run_skips_passed_steps(tmp_path):
    first = tmp_path / "first"
    env = {"PYTHON": _stand_in_python(tmp_path, fail_on="gpu_tests.xml"), "GPU_CHECK_COMMIT": "feedbeef"}
    done = _run(first, "--steps", "correct_triton,gpu_tests", env=env, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # gpu_tests failed
    summary = (first / "summary.txt").read_text()
    assert re.search(r"^correct_triton\s+ok\b", summary, re.M), summary
    assert re.search(r"^gpu_tests\s+FAIL rc=3", summary, re.M), summary
    assert "commit: feedbeef (from GPU_CHECK_COMMIT)" in (first / "environment.txt").read_text()
    assert len(list(first.iterdir())) <= 8
    # The second run repeats nothing that passed: correct_triton is skipped, gpu_tests reruns and
    # its pytest gets the earlier JUnit file to deselect the tests that passed there.
    second = tmp_path / "second"
    env["PYTHON"] = _stand_in_python(tmp_path)
    done = _run(second, "--steps", "correct_triton,gpu_tests", "--skip-passed", first, env=env)
    summary = (second / "summary.txt").read_text()
    assert re.search(r"^correct_triton\s+PASSED-BEFORE", summary, re.M), summary
    assert re.search(r"^gpu_tests\s+ok\b", summary, re.M), summary
    log = (second / "log.txt").read_text()
    assert f"--skip-passed-junit {first}/gpu_tests.xml" in log
    assert "correct_triton.xml" not in log


def test_step_budget_cuts_a_hanging_step(tmp_path):
    slow = tmp_path / "python"
    slow.write_text("#!/usr/bin/env bash\ncase \"$*\" in *pytest*) sleep 30;; esac\nexit 0\n")
    slow.chmod(0o755)
    done = _run(tmp_path / "out", "--steps", "correct_triton", env={"PYTHON": str(slow), "GPU_CHECK_BUDGET_S": "6"},
                check=False)
    assert done.returncode == 1
    assert re.search(r"^correct_triton\s+TIMEOUT", (tmp_path / "out" / "summary.txt").read_text(), re.M)


def _pytest(tmp_path, *args):
    (tmp_path / "test_sample.py").write_text(
        "import time\n\n"
        "def test_fast():\n    assert 1 + 1 == 2\n\n"
        "def test_hangs():\n    time.sleep(30)\n\n"
        "def test_other():\n    assert True\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "bench.pytest_gpu_check", "-q", "-p", "no:cacheprovider",
                           "test_sample.py", *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)


def test_plugin_per_test_timeout_fails_only_the_slow_test(tmp_path):
    done = _pytest(tmp_path, "--per-test-timeout", "1", "--junitxml=first.xml")
    assert done.returncode == 1
    assert "TestTimeout" in done.stdout and "test_hangs ran past its 1 s limit" in done.stdout
    assert "1 failed, 2 passed" in done.stdout
    # A second run with the first run's JUnit file runs only what did not pass.
    again = _pytest(tmp_path, "--per-test-timeout", "1", "--skip-passed-junit", "first.xml")
    assert "1 failed, 2 deselected" in again.stdout


def test_plugin_junit_address_matches_pytest():
    sys.path.insert(0, str(ROOT))
    from bench.pytest_gpu_check import junit_address

    assert junit_address("tests/test_x.py::test_a[lstm-bfloat16]") == ("tests.test_x", "test_a[lstm-bfloat16]")
    assert junit_address("tests/test_x.py::TestK::test_b[a/b::c]") == ("tests.test_x.TestK", "test_b[a/b::c]")
