"""fastrnn: Elman, LSTM and GRU layers as drop-in replacements for torch.nn, with fused kernels.

    import fastrnn
    lstm = fastrnn.LSTM(input_size, hidden_size, num_layers=2)   # was torch.nn.LSTM

Models already built with torch.nn: ``fastrnn.convert(model)`` swaps their recurrent modules
(``to="torch"`` swaps back); ``with fastrnn.patch():`` makes torch.nn's own classes (and so their
subclasses and libraries that type-check them) run fastrnn's forward.

Backends: see :mod:`fastrnn.backends` (``backend=`` argument, ``fastrnn.use_backend``,
``FASTRNN_BACKEND``).
"""

from . import functional
from .backends import BackendError, registered_backends, use_backend
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from . import reference as _reference  # noqa: F401  (registers the "reference" backend)
from . import torch_backend as _torch_backend  # noqa: F401  (registers "torch")
from .triton import backend as _triton_backend  # noqa: F401  (registers "triton")
from .cuda import backend as _cuda_backend  # noqa: F401  (registers "cuda")
from .cpu import backend as _cpu_backend  # noqa: F401  (registers "cpu")
from .serialization import register_safe_globals as _register_safe_globals
from .patching import is_patched, patch
from .conversion import convert
from . import quantization as _quantization

_register_safe_globals()
_quantization.install()  # the modules' qconfig attribute (quantize_dynamic support)

__version__ = "0.1.0"

__all__ = [
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "functional", "use_backend", "registered_backends", "BackendError",
    "convert", "patch", "is_patched",
]
