"""The hostile-input fuzzer (tests/hostile_fuzz.py): crafted checkpoints and operator arguments
end in a Python exception or an answer equal to the float64 reference; never a crash, a hang or
a silent wrong answer. CI runs a small count; more with FASTRNN_HOSTILE_FUZZ=N (cases) and
FASTRNN_HOSTILE_SEED=S (first seed)."""

import os

from hostile_fuzz import run_cases

COUNT = int(os.environ.get("FASTRNN_HOSTILE_FUZZ", "40"))
FIRST = int(os.environ.get("FASTRNN_HOSTILE_SEED", "0"))
SECONDS_PER_CASE = 5  # generous: a case takes well under a second; a hang takes forever


def test_hostile_cases_end_in_an_error_or_the_reference_answer():
    code, out, err, last = run_cases(FIRST, COUNT, timeout=60 + SECONDS_PER_CASE * COUNT)
    if code == "timeout":
        raise AssertionError(f"a case hung: the last one started was {last!r}")
    assert code == 0, (
        f"the fuzzer's process ended with {code} (negative: killed by that signal) in case {last!r}; "
        f"rerun it with: python tests/hostile_fuzz.py SEED 1\n{err[-4000:]}"
    )
    done = [line for line in out.splitlines() if line.startswith("done ")]
    assert len(done) == COUNT, out[-2000:]
    outcomes = {" ".join(line.split()[3:]) for line in done}
    # The cases reach both ends: some are refused, some run (and were compared).
    assert "ran and agreed" in outcomes and ({"refused", "refused at load"} & outcomes), outcomes
