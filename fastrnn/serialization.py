"""fastrnn's public module classes on torch.load's ``weights_only`` allowlist.

A whole model saved with ``torch.save(model)`` loads with ``torch.load(f)`` (``weights_only=True``,
torch's default since 2.6) when every class in the pickle is allowed. fastrnn's modules pickle
as their class plus plain data (sizes, flags, ``mode``, the backend name) and their Parameters,
so allowing the six public classes lets nothing else in.

They are registered with :func:`torch.serialization.add_safe_globals` when fastrnn is imported
(as libraries with their own tensor or module classes do), so code written for torch.nn, which
allows only torch.nn's classes (``torch.serialization.safe_globals([MyModel, torch.nn.LSTM])``),
loads a checkpoint of the same model built with fastrnn unchanged. The user's own classes still
have to be allowed by the user: fastrnn only vouches for its own.
"""

from __future__ import annotations

import torch

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

SAFE_GLOBALS = (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell)


def register_safe_globals() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch >= 2.4
        add(list(SAFE_GLOBALS))
