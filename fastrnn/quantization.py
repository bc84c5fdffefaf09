"""fastrnn modules under ``torch.ao.quantization.quantize_dynamic``: quantized as torch.nn's, or a warning.

``quantize_dynamic`` picks modules by exact class (``qconfig_spec``, by default torch.nn's
Linear, LSTM, GRU and cells) and swaps them through a class -> quantized class mapping. fastrnn's
classes are other classes, so, left to itself, it would silently keep them in floating point
next to quantized Linear layers. fastrnn's modules therefore watch their ``qconfig`` attribute,
which quantization sets on every module of the model:

- given a qconfig (``quantize_dynamic(model, {torch.nn.Linear, fastrnn.LSTM})``, or a dict
  naming fastrnn classes): the module is converted to its torch.nn twin
  (:func:`fastrnn.convert`) and quantized exactly as that would be, into torch's dynamic
  quantized LSTM / GRU / LSTMCell / GRUCell / RNNCell (fastrnn's classes are added to torch's
  default dynamic mapping, ``DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS``, the first time this happens);
- given ``None`` (not named in ``qconfig_spec``): a warning says the module stays in floating
  point and how to quantize it. fastrnn.RNN is the exception, as torch.nn.RNN: torch has no
  dynamic quantized Elman RNN, so a qconfig on it warns and ``None`` is silent.

``torch.ao.quantization`` is deprecated from torch 2.10 on (in favour of torchao) but still
works; this module does not import it until a qconfig is set.

The modules know nothing of this: :func:`install` (called by ``import fastrnn``) attaches the
``qconfig`` attribute to their base classes from here, so quantization depends on the modules
and on :mod:`fastrnn.conversion`, never the other way round.
"""

from __future__ import annotations

import warnings

from .conversion import convert
from .modules import rnn, rnn_cell

# fastrnn class name -> torch.ao.nn.quantized.dynamic class name (the same as torch.nn's mapping)
QUANTIZED = {"LSTM": "LSTM", "GRU": "GRU", "LSTMCell": "LSTMCell", "GRUCell": "GRUCell", "RNNCell": "RNNCell"}


class QConfigAttribute:
    """The ``qconfig`` attribute of fastrnn's modules: stored as torch.nn's (in the instance
    ``__dict__``, absent until set), and acted on when quantization sets it."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        try:
            return obj.__dict__["qconfig"]
        except KeyError:
            raise AttributeError(f"'{type(obj).__name__}' object has no attribute 'qconfig'") from None

    def __set__(self, obj, value) -> None:
        obj.__dict__["qconfig"] = value
        _qconfig_set(obj, value)

    def __delete__(self, obj) -> None:
        try:
            del obj.__dict__["qconfig"]
        except KeyError:
            raise AttributeError("qconfig") from None


def install() -> None:
    """Give fastrnn's module bases the ``qconfig`` attribute above (idempotent)."""
    for base in (rnn.RNNBase, rnn_cell.RNNCellBase):
        if not isinstance(base.__dict__.get("qconfig"), QConfigAttribute):
            base.qconfig = QConfigAttribute()


def _class(name: str) -> type:
    return getattr(rnn, name, None) or getattr(rnn_cell, name)


def _quantizable():
    return tuple(_class(name) for name in QUANTIZED)


def _qconfig_set(module, qconfig) -> None:
    quantizable = _quantizable()
    base = next((cls for cls in quantizable if isinstance(module, cls)), None)
    name = type(module).__name__
    if qconfig is None:
        if base is not None:
            warnings.warn(
                f"fastrnn.{base.__name__} is left in floating point by torch.ao.quantization: its "
                f"qconfig_spec names torch.nn's classes, and fastrnn.{base.__name__} is not one. To "
                f"quantize it as torch.nn.{base.__name__} would be, name fastrnn.{base.__name__} in "
                f"qconfig_spec, e.g. quantize_dynamic(model, {{torch.nn.Linear, "
                f"fastrnn.{base.__name__}}}, dtype=torch.qint8), or call "
                f"fastrnn.convert(model, to='torch') first. If it should stay in floating point, "
                f"ignore this warning.",
                stacklevel=3,
            )
        return
    if base is None:
        warnings.warn(
            f"{name} stays in floating point: torch.ao.quantization has no dynamic quantized "
            f"Elman RNN (torch.nn.RNN is not quantized either)",
            stacklevel=3,
        )
        return
    if type(module) is not base:
        warnings.warn(
            f"{name} stays in floating point: torch.ao.quantization swaps exact classes, and {name} "
            f"is a subclass of fastrnn.{base.__name__}",
            stacklevel=3,
        )
        return
    register_dynamic_mappings()


class _ViaTorch:
    """Mapping entry for a fastrnn class: convert to torch.nn's twin, then torch's from_float."""

    def __init__(self, quantized_cls) -> None:
        self.quantized_cls = quantized_cls

    def from_float(self, mod, use_precomputed_fake_quant: bool = False):
        return self.quantized_cls.from_float(convert(mod, to="torch"),
                                             use_precomputed_fake_quant=use_precomputed_fake_quant)

    def __repr__(self) -> str:
        return f"fastrnn via {self.quantized_cls.__module__}.{self.quantized_cls.__qualname__}"


def register_dynamic_mappings() -> None:
    """Add fastrnn's classes to torch's default dynamic quantization mapping (idempotent)."""
    try:
        from torch.ao.nn.quantized import dynamic as nnqd
        from torch.ao.quantization.quantization_mappings import DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS
    except ImportError as exc:  # a torch without torch.ao.quantization: nothing would swap anyway
        warnings.warn(f"fastrnn modules stay in floating point: torch.ao.quantization is unavailable ({exc})")
        return
    for name, quantized in QUANTIZED.items():
        DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS.setdefault(_class(name), _ViaTorch(getattr(nnqd, quantized)))
