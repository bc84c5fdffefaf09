"""FSDP2 (``torch.distributed.fsdp.fully_shard``): a model with fastrnn layers, sharded over two
CPU processes (gloo), each with half the batch, trains exactly as the same model converted to
torch.nn (``fastrnn.convert(..., to="torch")``) trains in one process on the whole batch.

Each fastrnn layer is its own FSDP unit and the root another, as FSDP2's docs shard a model:
parameters are DTensor shards between forwards, gathered before each unit runs. float64, so the
only difference between the two ways is the summation order of the gradient reduce-scatter.
The processes rendezvous through a file in pytest's tmp_path.
"""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastrnn

fsdp = pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 needs torch.distributed")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip(f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard (FSDP2)",
                allow_module_level=True)

WORLD = 2
BATCH = 6  # 3 per process
STEPS = 2
DTYPE = torch.float64


class Tagger(torch.nn.Module):
    """A bidirectional 2-layer LSTM, a GRU on top of it and a GRUCell decoder step."""

    def __init__(self):
        super().__init__()
        self.lstm = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=DTYPE)
        self.gru = fastrnn.GRU(10, 4, batch_first=True, dtype=DTYPE)
        self.cell = fastrnn.GRUCell(4, 4, dtype=DTYPE)
        self.head = torch.nn.Linear(4, 2, dtype=DTYPE)

    def forward(self, x):
        out, _ = self.lstm(x)
        out, h = self.gru(out)
        return self.head(self.cell(out[:, -1], h[0]))


def _data():
    g = torch.Generator().manual_seed(4321)
    return torch.randn(BATCH, 7, 3, generator=g, dtype=DTYPE), torch.randn(BATCH, 2, generator=g, dtype=DTYPE)


def _train(model, x, y):
    """STEPS of SGD on the mean-squared error; the first step's grads and the final params (full)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # noqa: E731  (a DTensor shard)
    first_grads = None
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if first_grads is None:
            first_grads = [full(p.grad).detach().clone() for p in model.parameters()]
        opt.step()
    return first_grads, [full(p).detach().clone() for p in model.parameters()]


def _worker(rank, init_method, out_dir):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        torch.manual_seed(0)
        model = Tagger()
        for layer in (model.lstm, model.gru, model.cell):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        x, y = _data()
        shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results = _train(model, x[shard], y[shard])
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_fully_shard_trains_as_torch_nn_in_one_process(backend, tmp_path, monkeypatch):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    if backend == "auto":
        monkeypatch.delenv(fastrnn.backends.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(fastrnn.backends.ENV_VAR, backend)
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=WORLD, join=True)

    torch.manual_seed(0)
    expected_grads, expected_params = _train(fastrnn.convert(Tagger(), to="torch"), *_data())
    for rank in range(WORLD):
        grads, params = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert len(grads) == len(expected_grads) == len(params)
        for k, (g, e) in enumerate(zip(grads, expected_grads)):
            assert e.abs().max() > 0, f"parameter {k} got no gradient"
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=lambda m: f"rank {rank} grad {k}: {m}")
        for k, (p, e) in enumerate(zip(params, expected_params)):
            torch.testing.assert_close(p, e, rtol=1e-10, atol=1e-12, msg=lambda m: f"rank {rank} param {k}: {m}")
