"""The large-H launcher (fastrnn/triton/launch.py) and the grid barrier's arithmetic.

What a CPU can check of a barrier that needs co-resident programs: the grid size from a compiled
kernel's occupancy, the wrap-safe counter comparison (run as Triton code in the interpreter, at
the int32 wrap), and the stall path end to end (a barrier that can never pass: the kernel gives
up after its spin budget, flags the stall, and the layer is rerun step-wise with correct
results). That the cooperative launch and the barrier work on real hardware is for the GPU check
(bench/GPU_CHECK.md).
"""

import torch

from triton_env import DEVICE  # first: sets up Triton's CPU interpreter where there is no GPU

import pytest  # noqa: E402

from fastrnn.cells import CELLS  # noqa: E402
from fastrnn.triton.launch import programs_per_sm, size_grid  # noqa: E402
from kernel_helpers import assert_matches, run_layer_case  # noqa: E402

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from fastrnn.triton import autograd as triton_autograd  # noqa: E402
from fastrnn.triton import launch  # noqa: E402
from fastrnn.triton.large_h import counter_reached  # noqa: E402


def test_programs_per_sm_h100():
    """CUDA's occupancy rules with sm_90's limits (64K registers, 2048 threads, 228 KB)."""
    # The review's LSTM large-H bf16 forward: 8 warps, 255 registers, 193 KiB: one per SM.
    assert programs_per_sm(8, 255, 193 * 1024) == 1
    # Registers bind: 8 warps x 255 (256 allocated per thread) use 64K: one; at 128, two.
    assert programs_per_sm(8, 128, 10_000) == 2
    # Shared memory binds: 4 warps, 64 registers, 100 KB (+1 KB reserved each): two.
    assert programs_per_sm(4, 64, 100_000) == 2
    # Threads bind: 4 warps, 32 registers, no shared memory: 2048 / 128 = 16.
    assert programs_per_sm(4, 32, 0) == 16
    # More than a block may have: none.
    assert programs_per_sm(4, 32, 232_449) == 0


def test_size_grid():
    # design.md's anchor (H=768, P=48) on 132 resident programs: persistent, 1 group of 1 tile.
    assert size_grid(48, 1, 132) == (True, 1)
    # 64 batch tiles at P=32: as many groups as stay co-resident (4 * 32 <= 132).
    assert size_grid(32, 64, 132) == (True, 4)
    # Two programs per SM double the groups.
    assert size_grid(32, 64, 264) == (True, 8)
    # More slices than resident programs: step-wise, one group per batch tile.
    assert size_grid(64, 3, 48) == (False, 3)
    assert size_grid(64, 3, 48, groups=1) == (False, 1)


@triton.jit
def _reached_kernel(count_ptr, target_ptr, out_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    count = tl.load(count_ptr + offs)
    target = tl.load(target_ptr + offs)
    tl.store(out_ptr + offs, counter_reached(count, target).to(tl.int32))


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter's run of the device function")
def test_counter_reached_wraps():
    """The comparison large_h.grid_barrier uses, as Triton code: right across the int32 wrap of
    the arrival counter (T * P past 2^31), where a plain count >= target fails."""
    i32 = 2**31
    cases = [  # (count, target, reached)
        (5, 5, 1), (6, 5, 1), (4, 5, 0), (0, 0, 1),
        (i32 - 1, i32 - 1, 1), (i32 - 2, i32 - 1, 0),
        (-i32, i32 - 1, 1),  # count wrapped past 2^31 - 1, target not yet: reached
        (i32 - 48, -i32 + 10, 0),  # target wrapped, count 58 short of it: not reached
        (-i32 + 10, -i32 + 10, 1), (-1, 0, 0), (0, -1, 1), (-3, -2, 0),
    ]
    count = torch.tensor([c for c, _, _ in cases] + [0] * (16 - len(cases)), dtype=torch.int32)
    target = torch.tensor([t for _, t, _ in cases] + [0] * (16 - len(cases)), dtype=torch.int32)
    out = torch.full((16,), -1, dtype=torch.int32)
    _reached_kernel[(1,)](count, target, out, N=16)
    assert out[: len(cases)].tolist() == [r for _, _, r in cases]


@pytest.mark.skipif(DEVICE.type != "cpu", reason="a stall is forced through the interpreter's P = 1 barrier")
@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_stalled_barrier_reruns_stepwise(cell_name, monkeypatch):
    """A barrier that never passes (counters start at -1, so P = 1 arrival leaves them at 0 < 1)
    gives up after MAX_SPINS polls, flags the stall, and the layer reruns step-wise: a warning,
    correct outputs and gradients, and that device stays step-wise."""
    monkeypatch.setattr(triton_autograd, "POISON", True)
    monkeypatch.setattr(launch, "FORCE_LARGE_H", {"block_hs": 64, "persistent": True})
    monkeypatch.setattr(launch, "COUNTER_START", -1)
    monkeypatch.setattr(launch, "MAX_SPINS", 3)
    monkeypatch.setattr(launch, "_STEPWISE_DEVICES", set())
    start = dict(triton_autograd.LAUNCHES)
    T, B = 4, 5
    with pytest.warns(RuntimeWarning, match="grid barrier wait timed out.*one launch per step"):
        got, grads, expected, expected_grads = run_layer_case(
            "triton", CELLS[cell_name], T, B, 6, 40, False, "random", True, True, DEVICE)
    assert_matches(got, grads, expected, expected_grads, 1e-4, given_state=True)
    # Forward: one persistent launch, then T step-wise ones; the backward found the device
    # marked step-wise and ran T + 1 launches directly.
    assert triton_autograd.LAUNCHES["large_h_forward"] - start.get("large_h_forward", 0) == 1 + T
    assert triton_autograd.LAUNCHES["large_h_backward"] - start.get("large_h_backward", 0) == T + 1
    assert launch._STEPWISE_DEVICES == {DEVICE.index}


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter's P = 1 barrier")
def test_persistent_barrier_passes_without_stall(monkeypatch):
    """The same persistent launch with counters from 0: no warning, one launch each way."""
    monkeypatch.setattr(launch, "FORCE_LARGE_H", {"block_hs": 64, "persistent": True})
    monkeypatch.setattr(launch, "MAX_SPINS", 3)
    monkeypatch.setattr(launch, "_STEPWISE_DEVICES", set())
    start = dict(triton_autograd.LAUNCHES)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got, grads, expected, expected_grads = run_layer_case(
            "triton", CELLS["lstm"], 3, 3, 5, 40, True, [3, 1, 0], True, True, DEVICE)
    assert_matches(got, grads, expected, expected_grads, 1e-4, given_state=True)
    assert triton_autograd.LAUNCHES["large_h_forward"] - start.get("large_h_forward", 0) == 1
    assert triton_autograd.LAUNCHES["large_h_backward"] - start.get("large_h_backward", 0) == 1
    assert launch._STEPWISE_DEVICES == set()
