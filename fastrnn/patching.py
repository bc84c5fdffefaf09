"""``fastrnn.patch()``: torch.nn's own recurrent classes run their forward through fastrnn.

For code fastrnn cannot reach by swapping an import: libraries that subclass ``torch.nn.LSTM``
(pytorch-forecasting), check ``isinstance(m, torch.nn.LSTM)`` (torchrl), or construct torch.nn
modules themselves. While patched, ``forward`` of ``torch.nn.RNN``, ``LSTM``, ``GRU``,
``RNNCell``, ``LSTMCell`` and ``GRUCell`` is fastrnn's forward (the same function fastrnn's
modules run, called on the torch.nn module), so backend selection, ``fastrnn.use_backend``,
``FASTRNN_BACKEND`` and the kernels apply to every instance — built before or inside the block,
and instances of subclasses that do not override ``forward`` or call ``super().forward``. The
modules stay torch.nn modules: same class, parameters, ``state_dict``, hooks, parametrizations.

    with fastrnn.patch():              # or: handle = fastrnn.patch(); ...; handle.undo()
        model = SomeLibraryModel()     # builds torch.nn.LSTM inside
        with fastrnn.use_backend("triton"):
            out = model(x)

How: fastrnn's forward only relies on what torch.nn's modules also have (``mode``, sizes,
flags, ``_all_weights``, parameters by name, ``training``) plus its own helper methods and
derived attributes (``cell`` from ``mode``, ``num_directions``, ``backend`` defaulting to
``"auto"``). ``patch()`` puts fastrnn's ``forward`` on each torch.nn class and the helpers that
torch.nn's modules lack on ``torch.nn.RNNBase`` / ``torch.nn.RNNCellBase`` (``mode`` too on the
torch.nn cells), and ``undo()`` restores every class attribute it replaced or removes what it
added. Nested ``patch()`` calls are counted; torch.nn is restored when the last one is undone.
Meanwhile fastrnn's other helpers work on torch.nn modules too, e.g. ``lstm.explain_backend(x)``.

Limits:

- Global and process-wide: the classes themselves are changed, for every thread. A forward that
  started patched finishes on fastrnn even when another thread calls ``undo()`` meanwhile: the
  helpers stay on torch.nn's bases until the last such forward returns (``forward`` itself is
  restored at once, so calls after ``undo()`` run torch.nn's).
- TorchScript: ``torch.jit.script`` of a torch.nn recurrent module fails while patched (fastrnn's
  forward is not TorchScript); script it outside the block. ``torch.jit.trace`` works.
- ``torch.compile``: TorchDynamo refuses torch.nn's own RNN/GRU/LSTM modules wherever they meet
  it as an object (an argument of the compiled function, a module reached after a graph break:
  "Attempted to wrap RNN, GRU, or LSTM") unless ``torch._dynamo.config.allow_rnn`` is set. While
  patched their forward is fastrnn's, which traces, so ``patch()`` sets ``allow_rnn`` and the
  last ``undo()`` restores the value it found: a patched module compiles like fastrnn's own (one
  graph, no break). A later change of the flag by the user inside the block is overwritten on exit.
- A subclass that overrides ``forward`` with its own computation (not ``super().forward``) is
  not reached; nor is code calling ``torch._VF`` / ``torch.lstm`` directly.
- A subclass that stores its own attribute under one of the names patch() adds (``cell``,
  ``backend``, ``mode`` on cells, or a fastrnn helper method name) shadows fastrnn's; patch()
  never shadows an attribute torch.nn's modules have.
- Under ``auto`` a patched module mostly runs torch's own kernels again (backend ``"torch"``,
  one ``torch._VF`` call, as unpatched): what patching adds is fastrnn's dispatch, i.e. the
  reference where torch fails (e.g. > 65,535 steps on cuDNN), ``use_backend`` and the kernels.
  On another backend, dropout masks between layers are drawn by
  ``torch.nn.functional.dropout`` rather than by cuDNN.
"""

from __future__ import annotations

import threading
from typing import List, Tuple

import torch
from torch import nn

from .modules import rnn as _rnn, rnn_cell as _rnn_cell

# (torch.nn class, the fastrnn class whose forward it runs while patched)
FORWARDS = (
    (nn.RNN, _rnn.RNN), (nn.LSTM, _rnn.LSTM), (nn.GRU, _rnn.GRU),
    (nn.RNNCell, _rnn_cell.RNNCell), (nn.LSTMCell, _rnn_cell.LSTMCell), (nn.GRUCell, _rnn_cell.GRUCell),
)
# (torch.nn base, fastrnn base whose helpers it gets, a torch.nn class to probe for what its
# instances already have: instance attributes are not visible on the class)
BASES = (
    (nn.RNNBase, _rnn.RNNBase, lambda: nn.LSTM(1, 1, device="meta")),
    (nn.RNNCellBase, _rnn_cell.RNNCellBase, lambda: nn.LSTMCell(1, 1, device="meta")),
)
# Class attributes of fastrnn's bases that are fastrnn's own business, not its forward's.
NOT_SHARED = frozenset({"qconfig"})

_MISSING = object()
_lock = threading.Lock()  # guards the state below; never held while a forward runs
_depth = 0  # active patch() handles
# (class, name, previous value in cls.__dict__ or _MISSING), in the order they were set
_forwards: List[Tuple[object, str, object]] = []  # fastrnn's forward on the torch.nn classes, dynamo's allow_rnn
_helpers: List[Tuple[type, str, object]] = []  # what fastrnn's forward needs on torch.nn's bases
_running = 0  # patched forwards in flight, in any thread


class _Derived:
    """A read-only derived attribute (fastrnn's property) as a non-data descriptor: an instance
    attribute of the same name, set by a subclass of a torch.nn class, keeps working."""

    def __init__(self, fget, name):
        self.fget, self.__name__ = fget, name

    def __get__(self, obj, owner=None):
        return self if obj is None else self.fget(obj)


def _rnn_cell_mode(self) -> str:
    if self.nonlinearity == "tanh":
        return "RNN_TANH"
    if self.nonlinearity == "relu":
        return "RNN_RELU"
    raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")  # torch.nn.RNNCell's error


CELL_MODES = {
    nn.RNNCell: _Derived(_rnn_cell_mode, "mode"),
    nn.LSTMCell: "LSTM",
    nn.GRUCell: "GRU",
}


def _patched_forward(torch_cls, fast_cls):
    original = torch_cls.__dict__["forward"]

    def forward(self, input, hx=None):
        if torch.compiler.is_compiling():  # a tracer: no thread bookkeeping in the graph
            return fast_cls.forward(self, input, hx)
        global _running
        with _lock:
            if not _helpers:  # looked up before undo() and called after it: torch.nn's forward
                return original(self, input, hx)
            _running += 1  # the helpers stay until this forward is done (see _leave)
        try:
            return fast_cls.forward(self, input, hx)
        finally:
            _leave()

    forward.__qualname__ = f"{torch_cls.__name__}.forward"
    forward.__doc__ = f"fastrnn.patch(): runs {fast_cls.__module__}.{fast_cls.__qualname__}.forward"
    forward._fastrnn_patched = True
    return forward


def _leave() -> None:
    global _running
    with _lock:
        _running -= 1
        if _running == 0 and _depth == 0:  # the last forward after undo(): now remove the helpers
            _restore(_helpers)


def _set(saved, cls, name, value) -> None:
    saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
    setattr(cls, name, value)


def _allow_rnn_in_dynamo() -> None:
    """Let TorchDynamo trace torch.nn's RNN modules (their forward is fastrnn's while patched)."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)  # absent in a torch without dynamo
    if config is None or not hasattr(config, "allow_rnn"):
        return
    # a config value, restored with fastrnn's forwards (by setattr) when the last patch is undone
    _forwards.append((config, "allow_rnn", config.allow_rnn))
    config.allow_rnn = True


def _apply() -> None:
    if not _helpers:  # else still installed for forwards running since the last undo()
        for torch_base, fast_base, probe in BASES:
            instance = probe()
            for name, value in vars(fast_base).items():
                if (name.startswith("__") and name.endswith("__")) or name in NOT_SHARED or hasattr(instance, name):
                    continue
                _set(_helpers, torch_base, name, _Derived(value.fget, name) if isinstance(value, property) else value)
        for torch_cls, mode in CELL_MODES.items():
            if not hasattr(torch_cls, "mode"):
                _set(_helpers, torch_cls, "mode", mode)
    for torch_cls, fast_cls in FORWARDS:
        _set(_forwards, torch_cls, "forward", _patched_forward(torch_cls, fast_cls))
    _allow_rnn_in_dynamo()


def _restore(saved) -> None:
    while saved:
        cls, name, previous = saved.pop()
        if previous is _MISSING:
            delattr(cls, name)
        else:
            setattr(cls, name, previous)


def _undo_all() -> None:
    """torch.nn's forwards now; the helpers once no patched forward runs (another thread's may)."""
    _restore(_forwards)
    if _running == 0:
        _restore(_helpers)


class Patch:
    """Handle returned by :func:`patch`: a context manager, or call :meth:`undo`."""

    def __init__(self) -> None:
        self._active = True

    def undo(self) -> None:
        """Undo this patch(); torch.nn is restored when no other patch() is active. Idempotent."""
        global _depth
        with _lock:
            if not self._active:
                return
            self._active = False
            _depth -= 1
            if _depth == 0:
                _undo_all()

    def __enter__(self) -> "Patch":
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def patch() -> Patch:
    """Make torch.nn's RNN/LSTM/GRU and their cells run fastrnn's forward until undone.

    Returns a :class:`Patch`: use it as a context manager (``with fastrnn.patch():``) or call
    ``.undo()``. See the module docstring for how it works and its limits.
    """
    global _depth
    with _lock:
        if _depth == 0:
            try:
                _apply()
            except BaseException:
                _undo_all()
                raise
        _depth += 1
    return Patch()


def is_patched() -> bool:
    """Whether torch.nn's recurrent classes currently run fastrnn's forward."""
    return _depth > 0
