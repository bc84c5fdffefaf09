"""``fastrnn.convert(model)``: swap torch.nn's recurrent modules in a model for fastrnn's, and back.

Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: walks the model, replaces every module
whose class is exactly ``torch.nn.RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell`` or
``GRUCell`` (parametrized or not) by the fastrnn module of the same configuration, and returns
the model (the new module when ``model`` itself is one of them). The replacement holds the very
same Parameter objects (so an optimizer built before the conversion keeps training them, and
``requires_grad``, device and dtype are those of the model), the same parametrizations
(``torch.nn.utils.parametrize``: the ``parametrizations`` ModuleDict is moved over, originals and
all), buffers, hooks, training mode and ``qconfig``. ``convert(model, to="torch")`` is the way
back, to the exact torch.nn classes.

Subclasses are left alone, with a warning: their own methods would be lost. ``fastrnn.patch()``
reaches them. A module that appears several times in the model is converted once and stays shared.
Other attributes a user set on a module instance are not carried over.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Dict, Optional

from torch import nn
from torch.nn.utils import parametrize

from . import backends
from .modules import rnn as _rnn, rnn_cell as _rnn_cell

TO_FASTRNN = {
    nn.RNN: _rnn.RNN, nn.LSTM: _rnn.LSTM, nn.GRU: _rnn.GRU,
    nn.RNNCell: _rnn_cell.RNNCell, nn.LSTMCell: _rnn_cell.LSTMCell, nn.GRUCell: _rnn_cell.GRUCell,
}
TO_TORCH = {fast: torch_cls for torch_cls, fast in TO_FASTRNN.items()}
TARGETS = {"fastrnn": TO_FASTRNN, "torch": TO_TORCH}


def convert(module: nn.Module, to: str = "fastrnn", *, backend: str = backends.AUTO) -> nn.Module:
    """Replace torch.nn's RNN/LSTM/GRU modules and cells in ``module`` by fastrnn's (``to="fastrnn"``)
    or fastrnn's by torch.nn's (``to="torch"``); returns ``module``, or its replacement.

    ``backend`` is given to the fastrnn modules created (``to="fastrnn"`` only).
    """
    if to not in TARGETS:
        raise ValueError(f"convert(to=...) must be 'fastrnn' or 'torch', got {to!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert() expects a torch.nn.Module, got {type(module).__name__}")
    backends.check_backend_name(backend, "convert(backend=...)")
    if to == "torch" and backend != backends.AUTO:
        raise ValueError("convert(..., to='torch') takes no backend: torch.nn modules have none")
    return _convert(module, TARGETS[to], backend, "", {})


def _convert(module: nn.Module, table, backend: str, path: str, done: Dict[int, nn.Module]) -> nn.Module:
    if id(module) in done:
        return done[id(module)]
    source_cls = parametrize.type_before_parametrizations(module)
    target_cls = table.get(source_cls)
    if target_cls is not None:
        new = _swap(module, source_cls, target_cls, backend)
    else:
        _warn_if_subclass(module, source_cls, table, path)
        # _modules, not named_children(): that lists a module registered under two names once,
        # and the second name would keep the old module
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            converted = _convert(child, table, backend, f"{path}.{name}" if path else name, done)
            if converted is not child:
                module.add_module(name, converted)
        new = module
    done[id(module)] = new
    return new


def _warn_if_subclass(module, source_cls, table, path) -> None:
    bases = [cls for cls in table if issubclass(source_cls, cls)]
    if bases:
        where = f"module {path!r}" if path else "the model"
        warnings.warn(
            f"fastrnn.convert left {where} ({source_cls.__qualname__}, a subclass of "
            f"{bases[0].__module__}.{bases[0].__qualname__}) as it is: convert() replaces the "
            f"exact classes only, since a subclass's own methods would be lost. "
            f"fastrnn.patch() runs torch.nn subclasses through fastrnn instead.",
            stacklevel=4,
        )


def _constructor_args(module, source_cls) -> dict:
    if issubclass(source_cls, (nn.RNNBase, _rnn.RNNBase)):
        names = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"]
        names += ["proj_size"] if source_cls in (nn.LSTM, _rnn.LSTM) else []
    else:
        names = ["input_size", "hidden_size", "bias"]
    names += ["nonlinearity"] if source_cls in (nn.RNN, _rnn.RNN, nn.RNNCell, _rnn_cell.RNNCell) else []
    return {name: getattr(module, name) for name in names}


class _Placeholder(nn.Module):
    """Stands in for one parametrization while the real ParametrizationList is moved over."""

    def forward(self, x):
        return x


def _swap(src: nn.Module, source_cls, target_cls, backend: str) -> nn.Module:
    kwargs = _constructor_args(src, source_cls)
    if target_cls in TO_TORCH:
        kwargs["backend"] = backend
    with warnings.catch_warnings():
        # e.g. torch.nn's "dropout expects num_layers greater than 1": said when src was built
        warnings.simplefilter("ignore")
        dst = target_cls(**kwargs, device="meta")  # no memory, no RNG draws: every tensor comes from src

    parametrized = getattr(src, "parametrizations", None) if parametrize.is_parametrized(src) else None
    if parametrized is not None:
        for name in parametrized:
            parametrize.register_parametrization(dst, name, _Placeholder(), unsafe=True)
            dst.parametrizations[name] = parametrized[name]
    for name in list(dst._parameters):
        if name in src._parameters:
            dst._parameters[name] = src._parameters[name]
        else:  # reparametrized by a hook (torch.nn.utils.weight_norm): as src holds it
            del dst._parameters[name]
            if name in src.__dict__:
                dst.__dict__[name] = src.__dict__[name]
    for name, param in src._parameters.items():  # e.g. weight_norm's weight_g / weight_v
        dst._parameters.setdefault(name, param)
    dst._buffers = OrderedDict(src._buffers)
    dst._non_persistent_buffers_set = set(src._non_persistent_buffers_set)
    for name, child in src._modules.items():
        if name != "parametrizations":
            dst._modules[name] = child
    for key, value in vars(src).items():
        if "hooks" in key and isinstance(value, dict):
            dst.__dict__[key] = value.__class__(value)
    # Whether _backward_hooks holds full (register_full_backward_hook) or legacy hooks: without
    # it the new module would not run them (and mixing kinds would not raise).
    dst._is_full_backward_hook = getattr(src, "_is_full_backward_hook", None)
    dst.training = src.training
    qconfig: Optional[object] = getattr(src, "qconfig", None)
    if qconfig is not None:
        dst.qconfig = qconfig
    if isinstance(dst, nn.RNNBase):
        dst._init_flat_weights()  # torch.nn's cached list of its weights, now src's
    return dst
