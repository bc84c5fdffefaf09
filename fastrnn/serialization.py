"""fastrnn's public module classes on torch.load's ``weights_only`` allowlist, as stand-ins.

A whole model saved with ``torch.save(model)`` loads with ``torch.load(f)`` (``weights_only=True``,
torch's default since 2.6) when every class in the pickle is allowed. fastrnn's modules pickle
as their class plus plain data (sizes, flags, ``mode``, the backend name) and their Parameters.
Registered when fastrnn is imported (as libraries with their own tensor or module classes do),
so code written for torch.nn, which allows only torch.nn's classes
(``torch.serialization.safe_globals([MyModel, torch.nn.LSTM])``), loads a checkpoint of the same
model built with fastrnn unchanged. The user's own classes still have to be allowed by the user:
fastrnn only vouches for its own.

What a class on the allowlist lets a file do: create an instance without its constructor
(pickle's NEWOBJ, what ``torch.save`` writes), set its state (BUILD: ``__setstate__``), and call
it (REDUCE: the constructor, with arguments the file chooses). The last one is not needed to
load a module and is dangerous: a file of a few hundred bytes could construct a module of
billions of parameters, initialise them and draw from the global RNG. So the name of each class
(``fastrnn.modules.rnn.LSTM``, ...) is registered for a stand-in (:func:`_stand_in`), a subclass
that

- refuses to be constructed: no constructor, no parameter initialisation, no RNG draw;
- creates a bare instance for NEWOBJ, without arguments;
- on BUILD checks the state as the real class does (:mod:`fastrnn.modules.state_checks`:
  attribute types and ranges, every parameter the attributes name present with the shape they
  imply) and only then becomes an instance of the real class.

A file can therefore allocate nothing beyond its own tensors and the plain data it holds, and a
module it loads has parameters that agree with its sizes. Adding fastrnn's real classes to the
allowlist yourself (``add_safe_globals([fastrnn.LSTM])``) puts that name on it twice, and torch
then may pick the real class: don't; ``import fastrnn`` is all a load needs.
"""

from __future__ import annotations

from pickle import UnpicklingError

import torch

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

SAFE_GLOBALS = (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell)


def _stand_in(cls: type) -> type:
    """The class torch.load gets for ``cls``'s name: an instance of ``cls`` without its constructor."""

    def __new__(stand_in, *args, **kwargs):
        if args or kwargs:
            raise UnpicklingError(f"fastrnn.{cls.__name__}: a checkpoint may not pass arguments to create a module")
        return torch.nn.Module.__new__(stand_in)

    def __init__(self, *args, **kwargs):
        raise UnpicklingError(
            f"fastrnn.{cls.__name__}: a checkpoint may not call the constructor (it would allocate and "
            "initialise parameters); torch.save(module) writes the module's state, which loads"
        )

    def __setstate__(self, state):
        cls.__setstate__(self, state)  # checks the state: raises before the instance becomes a cls
        self.__class__ = cls

    return type(cls.__name__, (cls,), {
        "__new__": __new__, "__init__": __init__, "__setstate__": __setstate__,
        "__module__": __name__, "__qualname__": f"_stand_in.<{cls.__qualname__}>",
        "__doc__": f"torch.load's stand-in for {cls.__module__}.{cls.__qualname__} (see fastrnn.serialization).",
    })


STAND_INS = tuple((_stand_in(cls), f"{cls.__module__}.{cls.__qualname__}") for cls in SAFE_GLOBALS)


def register_safe_globals() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch >= 2.4
        add(list(STAND_INS))
