"""Optional peer implementations timed next to fastrnn when they are importable.

* ``flashrnn`` (PyPI package of Pöppel et al., "FlashRNN: Optimizing Traditional RNNs on Modern
  Hardware"). Its layers are multi-head, take the input projection outside the layer and lay
  out gates and weights differently from torch.nn; an adapter that feeds it the *same* weights
  has not been verified against its documentation here, so when installed it is reported but
  not timed (see ``ADAPTERS``).
* ``torchrl``'s Triton LSTM/GRU: same status.
* ``onnxruntime``: the same torch.nn layer exported to ONNX (its LSTM / GRU / RNN operators, by
  torch.onnx's TorchScript exporter) and run in an onnxruntime CPU session with
  ``torch.get_num_threads()`` intra-op threads: the CPU backend's peer. Inference only (a
  training row is skipped with that reason), float32 on the CPU. An optional dependency:
  ``pip install fastrnn[bench]``.

Peers are detected with ``importlib.util.find_spec`` (nothing is imported), and an absent or
unadapted peer is skipped with a one-line note. To add an adapter, put a callable in
``ADAPTERS`` that builds a module with torch.nn's forward signature from a torch.nn module and
the config (it is then timed and error-checked like every other row).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from typing import Callable, Dict, List, Tuple

import torch

PEERS = {
    "flashrnn": ("flashrnn", "FlashRNN (PyPI package flashrnn)"),
    "torchrl": ("torchrl", "torchrl Triton LSTM/GRU"),
    "onnxruntime": ("onnxruntime", "onnxruntime CPU session of the same layer (pip install fastrnn[bench])"),
}


class OnnxRuntimeLayer(torch.nn.Module):
    """A torch.nn RNN/LSTM/GRU exported to ONNX and run by onnxruntime on the CPU, with
    torch.nn's forward signature (input, hx) -> (output, h_n | (h_n, c_n)); time-major input."""

    def __init__(self, module: torch.nn.Module, config, device, dtype):
        super().__init__()
        if torch.device(device).type != "cpu" or dtype != torch.float32:
            raise ValueError(f"the onnxruntime peer runs float32 on the CPU only, not {dtype} on {device}")
        import onnxruntime

        self.lstm = isinstance(module, torch.nn.LSTM)
        states = config.layers * (2 if config.bidirectional else 1)
        x = torch.zeros(config.seq_len, config.batch, config.input_size)
        h = torch.zeros(states, config.batch, config.hidden_size)
        hx = (h, h.clone()) if self.lstm else h
        self.inputs = ["x", "h0", "c0"] if self.lstm else ["x", "h0"]
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated in favour of dynamo,
            warnings.simplefilter("ignore")  # which does not emit ONNX's recurrent operators
            torch.onnx.export(module.eval(), (x, hx), buffer, dynamo=False, input_names=self.inputs,
                              opset_version=17)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def forward(self, x, hx):
        if self.training or x.requires_grad:
            raise NotImplementedError("the onnxruntime peer runs inference only (onnxruntime has no backward here)")
        states = hx if self.lstm else (hx,)
        feeds = {name: t.detach().contiguous().numpy() for name, t in zip(self.inputs, (x, *states))}
        out, *final = (torch.from_numpy(a) for a in self.session.run(None, feeds))
        return out, (tuple(final) if self.lstm else final[0])


# name -> builder(torch_module, config, device, dtype) -> module with torch.nn's forward
ADAPTERS: Dict[str, Callable] = {"onnxruntime": OnnxRuntimeLayer}


def detect(requested: List[str]) -> Tuple[List[str], List[str]]:
    """-> (peer names to time, one-line notes about the others)."""
    run, notes = [], []
    for name in requested:
        module, title = PEERS[name]
        try:
            present = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            present = False
        if not present:
            notes.append(f"peer {name}: {title} is not installed; skipped")
        elif name not in ADAPTERS:
            notes.append(f"peer {name}: {title} is installed, but no adapter verified to give it "
                          f"torch.nn's weights yet; skipped")
        else:
            run.append(name)
    return run, notes
