"""fastrnn-bench: end-to-end runs on the CPU, output files, usage errors, and the pure helpers."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastrnn import backends
from fastrnn.backends import Backend
from fastrnn.bench import cli, cudnn_heuristic, flops, presets, report
from fastrnn.bench.report import ROW_FIELDS
from fastrnn.bench.timing import quantile, summarize
from fastrnn.reference import reference_layer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch", "3", "--seq-len", "4", "--hidden-size", "8", "--input-size", "5", "--repeats", "2",
        "--warmup", "0", "--device", "cpu", "--quiet"]
METADATA_KEYS = {"date", "device", "gpu_name", "sm_count", "torch", "cuda", "cudnn", "triton", "python",
                 "commit", "git_dirty", "tf32", "grid_barrier"}


def _check_row(row):
    assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
    assert row["median_ms"] > 0 and row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
    assert row["samples"] == 2
    assert row["us_per_step"] == pytest.approx(row["median_ms"] * 1e3 / row["seq_len"])
    assert row["speedup_vs_torch"] > 0 and row["tflops"] > 0 and row["flops"] > 0
    assert row["peak_mem_mb"] is None and "CPU" in row["peak_mem_method"]
    assert row["tf32"] is False
    assert isinstance(row["torch_nn_path"], str) and row["torch_nn_path"].startswith("CPU")
    assert 0 <= row["max_rel_err_out"] < 1e-5
    if row["mode"] == "training":
        assert 0 <= row["max_rel_err_grad"] < 1e-5
        assert {"input", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"} <= set(row["grad_errors"])
    else:
        assert row["max_rel_err_grad"] is None
    assert row["error_ok"] is True


def test_run_in_process_writes_json_and_csv(tmp_path, capsys, auto_backend):
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    rc = cli.main(["--cell", "lstm,gru", "--backends", "torch.nn,auto,reference", *TINY,
                   "--output", str(out), "--csv", str(table)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "fastrnn:reference" in stdout and "torch.nn" in stdout and "speedup" in stdout
    result = json.loads(out.read_text())
    assert METADATA_KEYS <= set(result["metadata"])
    assert result["metadata"]["device"]["type"] == "cpu" and result["metadata"]["commit"]
    assert result["metadata"]["grid_barrier"] is None  # a GPU-only measurement (bench/barrier_floor.py)
    assert "floor of a persistent step" not in stdout
    assert result["settings"]["repeats"] == 2
    rows = result["rows"]
    assert {(r["cell"], r["impl"], r["mode"]) for r in rows} == {
        (c, i, m) for c in ("lstm", "gru") for i in ("torch.nn", "fastrnn:auto", "fastrnn:reference")
        for m in ("inference", "training")}
    for row in rows:
        _check_row(row)
        if row["impl"] == "torch.nn":
            assert row["speedup_vs_torch"] == 1.0
        # fastrnn as a user gets it: on the CPU, torch's own kernels (the table names it too)
        assert row.get("auto_backend") == ("torch" if row["impl"] == "fastrnn:auto" else None)
    assert "fastrnn:auto (torch)" in stdout
    lstm = next(r for r in rows if r["cell"] == "lstm" and r["mode"] == "inference")
    assert lstm["flops"] == flops.forward_flops("lstm", 3, 4, 5, 8)
    with table.open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and set(ROW_FIELDS) <= set(csv_rows[0])
    assert float(csv_rows[0]["median_ms"]) > 0


def test_run_as_module_subprocess(tmp_path):
    out = tmp_path / "sub.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "fastrnn.bench", "--cell", "rnn_relu", "--layers", "2",
                           "--bidirectional", "--backends", "torch.nn,reference", *TINY, "--output", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rnn_relu B=3 T=4 I=5 H=8 L=2 bidir float32" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4
    for row in rows:
        _check_row(row)
        assert row["layers"] == 2 and row["bidirectional"] is True


@pytest.mark.parametrize("argv, words", [
    (["--bogus-flag"], ["unrecognized", "--bogus-flag"]),
    (["--batch", "0"], ["--batch", "positive"]),
    (["--batch", "-4"], ["--batch", "positive"]),
    (["--batch", "two"], ["--batch", "two"]),
    (["--hidden-size", "0"], ["--hidden-size", "positive"]),
    (["--seq-len", "8,-1"], ["--seq-len", "positive"]),
    (["--backends", "no_such_backend"], ["--backends", "no_such_backend"]),
    (["--cell", "transformer"], ["cell", "transformer"]),
    (["--dtype", "float8"], ["dtype", "float8"]),
    (["--repeats", "0"], ["--repeats"]),
    (["--threads", "0"], ["--threads"]),
    (["--device", "tpu"], ["--device", "tpu"]),
    (["--preset", "nope"], ["--preset", "nope"]),
])
def test_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--device", "cpu", "--no-save"] + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    for word in words:
        assert word in err


def _wrong_layer(*args, **kwargs):
    out, h, c = reference_layer(*args, **kwargs)
    return out * 1.01, h, c


def test_unavailable_unsupported_and_wrong_backends(tmp_path, capsys):
    fakes = [
        Backend("fake_missing", -10, reference_layer, unavailable=lambda: "needs hardware we lack", auto=False),
        Backend("fake_narrow", -10, reference_layer, unsupported=lambda p: "only H=1024", auto=False),
        Backend("fake_wrong", -10, _wrong_layer, auto=False),
    ]
    for fake in fakes:
        backends.register_backend(fake)
    try:
        out = tmp_path / "f.json"
        rc = cli.main(["--cell", "lstm", "--backends", "torch.nn,reference,fake_missing,fake_narrow,fake_wrong",
                       *TINY, "--output", str(out), "--strict"])
    finally:
        for fake in fakes:
            backends._REGISTRY.pop(fake.name, None)
    assert rc == 1  # --strict: the wrong backend's error is above tolerance
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert any("fake_missing" in n and "needs hardware we lack" in n for n in result["notes"])
    assert [s["impl"] for s in result["skipped"]] == ["fastrnn:fake_narrow"]
    assert "only H=1024" in result["skipped"][0]["reason"]
    wrong = [r for r in result["rows"] if r["impl"] == "fastrnn:fake_wrong"]
    assert len(wrong) == 2 and all(r["error_ok"] is False and r["max_rel_err_out"] > 5e-3 for r in wrong)
    assert "! error above tolerance" in stdout and "skipped: unsupported: only H=1024" in stdout


def test_report_prints_the_barrier_floor(tmp_path):
    """On a GPU the table shows the measured empty grid.sync() beside the rows (faked here)."""
    out = tmp_path / "r.json"
    assert cli.main(["--cell", "gru", "--backends", "torch.nn", *TINY, "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    result["metadata"]["grid_barrier"] = {"blocks": 132, "threads_per_block": 256, "iters": 2000,
                                          "us_per_barrier": 1.234}
    assert "one empty grid.sync() over 132 blocks = 1.23 us" in report.table(result)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the empty-barrier floor is measured on a CUDA GPU")
def test_barrier_floor_on_gpu():
    from fastrnn.bench import barrier_floor

    floor = barrier_floor.measure(torch.device("cuda"))
    if floor is None:
        pytest.skip("fastrnn._C is not built, so there is no barrier kernel to time")
    assert floor["blocks"] == torch.cuda.get_device_properties(0).multi_processor_count
    assert 0.05 < floor["us_per_barrier"] < 100, floor


def test_presets():
    flash = presets.expand("flashrnn", "cuda")
    assert len(flash) == 6
    assert {(c.batch, c.seq_len, c.input_size, c.hidden_size) for c in flash} == {(16, 1024, 768, 768)}
    assert {c.dtype for c in flash} == {"bfloat16", "float16"}
    assert {c.cell for c in flash} == {"lstm", "gru", "rnn_tanh"}
    targets = presets.expand("targets", "cuda")
    assert targets[:6] == flash
    assert {(c.cell, c.batch, c.hidden_size, c.dtype) for c in targets[6:]} == {
        (cell, 256, 1024, "bfloat16") for cell in ("lstm", "gru", "rnn_tanh")}
    cpu = presets.expand("default", "cpu")
    assert {c.cell for c in cpu} == {"lstm", "gru", "rnn_tanh"} and len({c.batch for c in cpu}) >= 3
    assert max(c.hidden_size for c in cpu) < max(c.hidden_size for c in presets.expand("default", "cuda"))
    sweep = presets.expand("sweep-batch", "cpu", {"batch": [2, 4], "cell": ["gru"]})
    assert [(c.cell, c.batch) for c in sweep] == [("gru", 2), ("gru", 4)]
    for name in ("sweep-hidden", "sweep-seq-len"):
        assert len(presets.expand(name, "cpu")) >= 4 and len(presets.expand(name, "cuda")) >= 4


def test_timing_harness_presets():
    """auto-vs-torch and reference-cpu: the shapes and the two implementations they compare."""
    auto = presets.expand("auto-vs-torch", "cpu")
    assert {c.cell for c in auto} == {"lstm", "gru", "rnn_tanh"} and {c.batch for c in auto} == {1, 16, 64}
    assert any(c.layers == 2 and c.bidirectional for c in auto)
    assert presets.BACKENDS["auto-vs-torch"] == ["torch.nn", "auto"]
    assert presets.BACKENDS["reference-cpu"] == ["torch.nn", "reference"]
    assert len(presets.expand("reference-cpu", "cpu")) == 6


def test_cudnn_heuristic():
    h100 = {"type": "cuda", "capability": [9, 0], "sm_count": 132, "cudnn_enabled": True, "cudnn_version": 91000}
    a10 = dict(h100, capability=[8, 6], sm_count=72)

    def path(device, training=False, **kw):
        base = dict(cell="lstm", batch=16, seq_len=1024, input_size=768, hidden_size=768, dtype="float16")
        return cudnn_heuristic.torch_path(presets.Config(**{**base, **kw}), device, training)

    assert path(h100) == "cuDNN persistent"
    assert path(h100, training=True) == "cuDNN persistent"
    assert path(h100, dtype="bfloat16") == "cuDNN standard"
    assert path(h100, cell="gru") == "cuDNN standard"
    assert path(h100, batch=12) == "cuDNN standard"
    assert path(h100, layers=2) == "cuDNN standard"
    assert path(h100, cell="rnn_tanh", batch=96, hidden_size=896, input_size=896) == "cuDNN standard"
    assert path(a10) == "cuDNN standard"
    assert path(h100, hidden_size=128, dtype="float32") == "cuDNN persistent-small-h"
    assert path(h100, hidden_size=192, training=True) == "cuDNN fwd persistent-small-h, bwd standard"
    assert path(dict(h100, cudnn_version=None)).startswith("native CUDA")
    cpu = {"type": "cpu", "mkldnn_enabled": True, "mkldnn_bf16": False, "mkldnn_fp16": False}
    assert path(cpu, dtype="float32") == "CPU oneDNN LSTM"
    assert path(cpu, dtype="float32", cell="gru") == "CPU native ATen loop"


def test_flops_and_statistics():
    # LSTM, 2 layers, bidirectional: layer 0 sees I, layer 1 sees 2H.
    f = flops.forward_flops("lstm", batch=2, seq_len=3, input_size=5, hidden_size=7, layers=2, bidirectional=True)
    assert f == 2 * (2 * 3 * 2 * 4 * 7 * (5 + 7)) + 2 * (2 * 3 * 2 * 4 * 7 * (14 + 7))
    assert flops.training_flops("gru", 1, 1, 1, 1) == 3 * flops.forward_flops("gru", 1, 1, 1, 1)
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert quantile([1.0, 2.0], 0.2) == pytest.approx(1.2)
    s = summarize([5.0, 1.0, 3.0])
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["samples"] == 3


def test_plot(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["run", "--cell", "gru", "--backends", "torch.nn,reference", *TINY, "--batch", "1,2",
                     "--output", str(out)]) == 0
    capsys.readouterr()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert cli.main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 1
        assert "needs matplotlib" in capsys.readouterr().err
        return
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "speedup_vs_batch_training.png").stat().st_size > 0


def test_list(capsys):
    assert cli.main(["--list", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for word in ("flashrnn", "sweep-batch", "reference", "torch.nn", "auto", "torchrl"):
        assert word in out


def test_output_folder_gets_the_default_name(tmp_path):
    existing = tmp_path / "results"
    existing.mkdir()
    assert cli.main(["--cell", "gru", "--backends", "torch", *TINY, "--output", str(existing)]) == 0
    (written,) = existing.glob("*.json")
    result = json.loads(written.read_text())
    assert written.name == report.default_json_path(result).name
    new = tmp_path / "new"
    assert cli.main(["--cell", "gru", "--backends", "torch", *TINY, "--output", f"{new}{os.sep}"]) == 0
    assert len(list(new.glob("*.json"))) == 1


@pytest.mark.parametrize("threshold", [-1.0, math.inf], ids=["all-noisy", "none-noisy"])
def test_noisy_rows_are_flagged(threshold, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "NOISY_SPREAD", threshold)
    out = tmp_path / "r.json"
    assert cli.main(["--cell", "gru", "--backends", "torch,reference", *TINY, "--output", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert rows and all(r["spread_rel"] == pytest.approx((r["p80_ms"] - r["p20_ms"]) / r["median_ms"], abs=1e-4)
                        for r in rows)
    noisy = threshold < 0
    assert all(r["noisy"] is noisy for r in rows)
    assert (table.count("~ noisy: p20-p80 spread") == len(rows)) is noisy
    assert any("marked '~ noisy'" in n for n in result["notes"]) is noisy


def test_mark_noisy_speedup_against_a_noisy_torch_row():
    rows = [dict(median_ms=10.0, p20_ms=5.0, p80_ms=15.0), dict(median_ms=2.0, p20_ms=1.99, p80_ms=2.01),
            dict(median_ms=None, p20_ms=None, p80_ms=None)]
    assert report.mark_noisy(rows) == 1
    assert [r["noisy"] for r in rows] == [True, False, False] and rows[2]["spread_rel"] is None
    base = dict(cell="gru", batch=1, seq_len=4, input_size=5, hidden_size=8, layers=1, bidirectional=False,
                dtype="float32", mode="training", p20_ms=1.0, p80_ms=1.0, us_per_step=1.0, tflops=1.0,
                peak_mem_mb=None, max_rel_err_out=0.0, max_rel_err_grad=0.0, error_ok=True, torch_nn_path="CPU")
    torch_row = dict(base, impl="torch.nn", impl_kind="torch", median_ms=1.0, p20_ms=0.5, p80_ms=1.5,
                     speedup_vs_torch=None)
    fast_row = dict(base, impl="fastrnn:reference", impl_kind="fastrnn", median_ms=0.5, p20_ms=0.5, p80_ms=0.5,
                    speedup_vs_torch=2.0)
    report.mark_noisy([torch_row, fast_row])
    result = {"metadata": {"device": {"type": "cpu", "name": "x", "threads": 1}, "torch": "t", "cuda": None,
                           "cudnn": None, "triton": None, "commit": "unknown", "tf32": {}},
              "settings": {"preset": "default", "timing_method": "m", "repeats": 2, "warmup": 0},
              "rows": [torch_row, fast_row], "skipped": [], "notes": []}
    lines = report.table(result).splitlines()
    assert "~ noisy torch.nn row: speed-up uncertain" in next(l for l in lines if "fastrnn:reference" in l)


@pytest.mark.parametrize("content, why", [
    ({"results": []}, "schema is None, expected 'fastrnn-bench/1'"),
    ([1, 2], "expected a JSON object, got list"),
    ({"schema": "fastrnn-bench/1", "metadata": {"device": {"type": "cpu", "name": "x"}}, "rows": [{"impl": "a"}]},
     "row 0 lacks batch"),
])
def test_plot_rejects_json_of_another_shape(content, why, tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(content))
    assert cli.main(["plot", str(path), "--out", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a fastrnn-bench result file" in err and why in err


def test_version_recorded_outside_a_checkout(tmp_path):
    """The JSON names the fastrnn version that ran, which is all there is without a git checkout."""
    import fastrnn
    from fastrnn.bench import environment

    assert environment.git_commit(tmp_path) == {"commit": "unknown", "dirty": None}
    meta = environment.run_metadata(torch.device("cpu"))
    assert meta["fastrnn"] == fastrnn.__version__


def test_cpu_preset_and_onnxruntime_peer(tmp_path, capsys):
    """The cpu preset's shapes; onnxruntime runs the same layer (same weights: error within
    tolerance) for inference and is skipped with its reason for training."""
    assert {(c.cell, c.batch, c.seq_len, c.input_size, c.hidden_size) for c in presets.expand("cpu", "cpu")} == {
        (cell, b, 128, h, h) for cell in ("gru", "rnn_tanh", "lstm") for b in (1, 16) for h in (256, 512)}
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "ort.json"
    rc = cli.main(["--cell", "gru,lstm", "--backends", "torch.nn,onnxruntime", *TINY, "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = [r for r in result["rows"] if r["impl"] == "onnxruntime"]
    assert {(r["cell"], r["mode"]) for r in rows} == {("gru", "inference"), ("lstm", "inference")}
    assert all(r["error_ok"] and r["max_rel_err_out"] < 1e-5 for r in rows)
    assert any(s["impl"] == "onnxruntime" and s.get("mode") == "training" and "inference only" in s["reason"]
               for s in result["skipped"])
