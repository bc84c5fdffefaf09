"""bench/cpu_floor.py: the per-step floor's arithmetic, and one tiny run end to end (no timing is asserted)."""

import importlib.util
import json
import pathlib

import pytest

from fastrnn.cpu import backend as cpu_backend

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "cpu_floor.py"
spec = importlib.util.spec_from_file_location("cpu_floor", SCRIPT)
cpu_floor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_floor)

PEAKS = {"gflops": 100.0, "l2_gbps": 50.0, "l3_gbps": 10.0, "sigmoid_ns_per_elem": 1.0, "tanh_ns_per_elem": 2.0}


def test_floor_gru_l2_bandwidth_bound():
    # GRU B=1 H=256: 2*256*768 = 393,216 FLOP per GEMM-step at 100 GFLOP/s = 3.93216 us;
    # W_hh is 786,432 bytes, fits a 2 MiB L2: 15.72864 us at 50 GB/s; gates 256*(2*1 + 1*2) ns.
    fl = cpu_floor.floor_us("GRU", 1, 256, PEAKS, 2 << 20, 1)
    assert fl["w_hh_level"] == "l2"
    assert fl["input_us"] == pytest.approx(3.93216)
    assert fl["recurrent_us"] == pytest.approx(15.72864)
    assert fl["gates_us"] == pytest.approx(1.024)
    assert fl["floor_us"] == pytest.approx(3.93216 + 15.72864 + 1.024)


def test_floor_l3_and_threads():
    # GRU H=512: 3 MiB of W_hh is past one 2 MiB L2 (L3 at 10 GB/s), inside two.
    assert cpu_floor.floor_us("GRU", 1, 512, PEAKS, 2 << 20, 1)["recurrent_us"] == pytest.approx(3 * 512 * 512 * 4 / 10e3)
    assert cpu_floor.floor_us("GRU", 1, 512, PEAKS, 2 << 20, 2)["w_hh_level"] == "l2"
    # B=64 Elman H=256: compute-bound, 2*64*256*256 FLOP = 83.886 us at 100 GFLOP/s > 262,144 B / 50 GB/s.
    assert cpu_floor.floor_us("RNN", 64, 256, PEAKS, 2 << 20, 1)["recurrent_us"] == pytest.approx(2 * 64 * 256 * 256 / 1e5)
    assert cpu_floor.floor_us("LSTM", 2, 8, PEAKS, 2 << 20, 1)["gates_us"] == pytest.approx(2 * 8 * (3 * 1 + 2 * 2) / 1e3)


@pytest.mark.skipif(cpu_backend.unavailable() is not None, reason=f"fastrnn._cpu is not usable here: {cpu_backend.unavailable()}")
def test_tiny_run_writes_rows(tmp_path):
    out = tmp_path / "floor.json"
    cpu_floor.main(["--cells", "GRU,RNN", "--batches", "1", "--sizes", "24", "--seq-len", "3", "--rounds", "1",
                    "--json", str(out)])
    result = json.loads(out.read_text())
    assert [(r["cell"], r["batch"], r["hidden"]) for r in result["rows"]] == [("GRU", 1, 24), ("RNN", 1, 24)]
    for row in result["rows"]:
        assert row["floor_us"] > 0 and row["cpu_median_us"] > 0 and row["torch.nn_median_us"] > 0
        assert {"cpu_marginal_us", "cpu_call_us", "torch.nn_marginal_us", "torch.nn_call_us"} <= set(row)
    assert result["peaks"]["gflops"] > 0 and result["threads"] == 1
