"""pytest plugin of the GPU check (bench/gpu_check.sh loads it with ``-p bench.pytest_gpu_check``):
a time limit per test, and deselecting what an earlier run passed.

--per-test-timeout S    a test (setup, call and teardown) that runs past S seconds fails with
                        TestTimeout, and the run goes on with the next test. A test stuck in C
                        (a kernel that never returns) cannot be interrupted from Python: past
                        2*S + 10 s faulthandler prints every thread's stack and ends the process
                        (the step's own timeout is the last resort).
--skip-passed-junit X   tests that passed in the JUnit file X (an earlier run's) are deselected,
                        so a second run repeats nothing that already passed.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import xml.etree.ElementTree as ET
from typing import Set, Tuple

import pytest


class TestTimeout(Exception):
    """A test ran past --per-test-timeout."""

    __test__ = False  # not a test class


def pytest_addoption(parser):
    group = parser.getgroup("gpu_check", "the GPU check (bench/gpu_check.sh)")
    group.addoption("--per-test-timeout", type=float, default=0.0, metavar="S",
                    help="fail a test that runs past S seconds (0: no limit)")
    group.addoption("--skip-passed-junit", default=None, metavar="XML",
                    help="deselect the tests that passed in this JUnit file of an earlier run")


def junit_address(nodeid: str) -> Tuple[str, str]:
    """(classname, name) under which pytest's junitxml records the test ``nodeid``: the path with
    '/' -> '.' and no '.py', the classes, then the test name with its parameters."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def passed_tests(junit_path: str) -> Set[Tuple[str, str]]:
    """(classname, name) of every test case in the JUnit file that neither failed, errored nor
    was skipped."""
    passed = set()
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            passed.add((case.get("classname", ""), case.get("name", "")))
    return passed


def pytest_collection_modifyitems(config, items):
    path = config.getoption("skip_passed_junit")
    if not path or not os.path.exists(path):
        return
    passed = passed_tests(path)
    keep = [item for item in items if junit_address(item.nodeid) not in passed]
    dropped = [item for item in items if junit_address(item.nodeid) in passed]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = item.config.getoption("per_test_timeout")
    if not limit or limit <= 0:
        yield
        return

    def expire(signum, frame):
        raise TestTimeout(f"{item.nodeid} ran past its {limit:g} s limit (--per-test-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(2 * limit + 10, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
