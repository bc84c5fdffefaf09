"""Optional peer implementations timed next to fastrnn when they are importable.

* ``flashrnn`` (PyPI package of Pöppel et al., "FlashRNN: Optimizing Traditional RNNs on Modern
  Hardware"). Its layers are multi-head, take the input projection outside the layer and lay
  out gates and weights differently from torch.nn; an adapter that feeds it the *same* weights
  has not been verified against its documentation here, so when installed it is reported but
  not timed (see ``ADAPTERS``).
* ``torchrl``'s Triton LSTM/GRU: same status.

Peers are detected with ``importlib.util.find_spec`` (nothing is imported), and an absent or
unadapted peer is skipped with a one-line note. To add an adapter, put a callable in
``ADAPTERS`` that builds a module with torch.nn's forward signature from a torch.nn module and
the config (it is then timed and error-checked like every other row).
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Dict, List, Tuple

PEERS = {
    "flashrnn": ("flashrnn", "FlashRNN (PyPI package flashrnn)"),
    "torchrl": ("torchrl", "torchrl Triton LSTM/GRU"),
}

# name -> builder(torch_module, config, device, dtype) -> module with torch.nn's forward
ADAPTERS: Dict[str, Callable] = {}


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
