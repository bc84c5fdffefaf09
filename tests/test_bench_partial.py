"""fastrnn-bench writes its JSON after every configuration, so a run stopped part-way (the GPU
check's per-step timeout) leaves the finished rows behind (bench/GPU_CHECK.md)."""

import json

import pytest

from fastrnn.bench import cli, runner

TINY = ["--batch", "3", "--seq-len", "4", "--hidden-size", "8", "--input-size", "5", "--repeats", "2",
        "--warmup", "0", "--device", "cpu", "--quiet", "--backends", "torch.nn,reference"]


def test_stopped_run_leaves_the_finished_configurations(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    real = runner.run_config
    calls = []

    def stop_at_third(config, *args, **kwargs):
        calls.append(config.cell)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a timeout's signal looks like to the run
        return real(config, *args, **kwargs)

    monkeypatch.setattr(runner, "run_config", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--cell", "lstm,gru,rnn_tanh", *TINY, "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["partial"] == {"configs_done": 2, "configs_total": 3}
    assert {r["cell"] for r in result["rows"]} == {"lstm", "gru"}
    assert {r["impl"] for r in result["rows"]} == {"torch.nn", "fastrnn:reference"}
    assert result["metadata"]["device"]["type"] == "cpu"


def test_finished_run_is_not_partial(tmp_path):
    out = tmp_path / "r.json"
    assert cli.main(["--cell", "lstm,gru", *TINY, "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "partial" not in result and result["settings"]["repeats"] == 2
    assert {r["cell"] for r in result["rows"]} == {"lstm", "gru"}
