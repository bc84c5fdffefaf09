"""What a recurrent module's attributes promise about its parameters, checked.

A module's forward trusts its attributes (``mode``, sizes, flags, the ``_all_weights`` names)
to describe its parameters: torch's CPU kernel (oneDNN), which the ``torch`` backend calls
with the module's weights, checks no weight shape and reads past the end of a weight smaller
than the sizes say. Attributes can disagree with the parameters when a pickle says so
(``torch.load`` of a crafted or edited file) or when code sets them (``m.hidden_size = 1000``).
So:

- :func:`check_module_state` / :func:`check_cell_state` run when a module is unpickled
  (``__setstate__``): every attribute has its type and range, and every parameter the
  attributes name exists with the shape they imply. The work is bounded by the file: counts
  are compared with the lists the file holds before anything is built from them.
- :func:`check_weights` runs at the start of every (untraced) forward of RNN/LSTM/GRU, whatever
  the backend: the weights' shapes against the attributes, from a cached table of expected
  shapes (a dict lookup and one list comparison).

Shapes, with G the cell's gate count, H the hidden size, H_out = proj_size or H, D = 2 for a
bidirectional module else 1, per layer l and direction:

    weight_ih_l{l}   (G*H, I if l == 0 else D*H_out)     bias_ih_l{l}, bias_hh_l{l}  (G*H,)
    weight_hh_l{l}   (G*H, H_out)                        weight_hr_l{l}  (proj_size, H)  if proj_size > 0
"""

from __future__ import annotations

import numbers
from typing import Dict, List, Tuple

from torch import Tensor

from ..cells import get_cell

RNN_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


class StateError(RuntimeError):
    """A module's attributes or parameters contradict each other (e.g. a crafted checkpoint)."""


def weight_shapes(mode: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
                  bias: bool, proj_size: int) -> List[Dict[str, Tuple[int, ...]]]:
    """Per layer-direction (layer-major), parameter kind -> shape, in registration order."""
    gate_size = get_cell(mode).num_gates * hidden_size
    h_out = proj_size if proj_size > 0 else hidden_size
    directions = 2 if bidirectional else 1
    result = []
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else h_out * directions
        for _ in range(directions):
            shapes = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, h_out)}
            if bias:
                shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
            if proj_size > 0:
                shapes["weight_hr"] = (proj_size, hidden_size)
            result.append(shapes)
    return result


def weight_names(num_layers: int, bidirectional: bool, kinds: List[List[str]]) -> List[List[str]]:
    """``_all_weights``: the parameter names per layer-direction for the kinds of each."""
    directions = 2 if bidirectional else 1
    return [[f"{kind}_l{k // directions}{'_reverse' if k % directions else ''}" for kind in kinds[k]]
            for k in range(num_layers * directions)]


def _size(module, name: str, minimum: int) -> int:
    value = module.__dict__.get(name)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise StateError(f"{type(module).__name__}.{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _flag(module, name: str) -> bool:
    value = module.__dict__.get(name)
    if not isinstance(value, bool):
        raise StateError(f"{type(module).__name__}.{name} must be a bool, got {value!r}")
    return value


def _common(module, modes) -> None:
    from .. import backends  # the registry is filled once fastrnn is imported, before any load

    if not isinstance(module.__dict__.get("_parameters"), dict):
        raise StateError(f"{type(module).__name__}: the state holds no parameter dict")
    mode = module.__dict__.get("mode")
    if mode not in modes:
        raise StateError(f"{type(module).__name__}.mode must be one of {list(modes)}, got {mode!r}")
    backend = module.__dict__.get("backend", backends.AUTO)
    try:
        backends.check_backend_name(backend, f"{type(module).__name__}.backend")
    except ValueError as e:
        raise StateError(str(e)) from None
    _flag(module, "training")
    if "nonlinearity" in module.__dict__ or mode.startswith("RNN_"):
        nonlinearity = module.__dict__.get("nonlinearity")
        if mode != {"tanh": "RNN_TANH", "relu": "RNN_RELU"}.get(nonlinearity):
            raise StateError(f"{type(module).__name__}: nonlinearity {nonlinearity!r} does not match mode {mode!r}")


def _check_parameters(module, expected: Dict[str, Tuple[int, ...]]) -> None:
    """Each named parameter exists with its shape; all share one floating dtype and device."""
    params = module._parameters
    first = None
    for name, shape in expected.items():
        weight = params.get(name)
        if weight is None and "parametrizations" in module.__dict__.get("_modules", {}):
            weight = getattr(module, name, None)  # computed by its parametrization
        if not isinstance(weight, Tensor):
            raise StateError(f"{type(module).__name__}: parameter {name} of shape {shape} is missing "
                             f"(got {type(weight).__name__})")
        if tuple(weight.shape) != shape:
            raise StateError(f"{type(module).__name__}: parameter {name} must have shape {shape} for the "
                             f"module's sizes, got {tuple(weight.shape)}")
        if not weight.is_floating_point():
            raise StateError(f"{type(module).__name__}: parameter {name} must be floating point, got {weight.dtype}")
        if first is None:
            first = (name, weight)
        elif (weight.dtype, weight.device) != (first[1].dtype, first[1].device):
            raise StateError(f"{type(module).__name__}: parameter {name} is {weight.dtype} on {weight.device}, "
                             f"{first[0]} is {first[1].dtype} on {first[1].device}")


def check_module_state(module) -> None:
    """An RNN/LSTM/GRU module just unpickled: attributes typed and in range, parameters as they say."""
    _common(module, RNN_MODES)
    input_size = _size(module, "input_size", 0)
    hidden_size = _size(module, "hidden_size", 1)
    num_layers = _size(module, "num_layers", 1)
    proj_size = _size(module, "proj_size", 0)
    bias, bidirectional = _flag(module, "bias"), _flag(module, "bidirectional")
    _flag(module, "batch_first")
    dropout = module.__dict__.get("dropout")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise StateError(f"{type(module).__name__}.dropout must be a number in [0, 1], got {dropout!r}")
    if proj_size and (module.mode != "LSTM" or proj_size >= hidden_size):
        raise StateError(f"{type(module).__name__}: proj_size={proj_size} needs an LSTM with hidden_size > "
                         f"proj_size (mode {module.mode!r}, hidden_size {hidden_size})")
    # Compare the count with the file's own list before building anything from the sizes.
    names = module.__dict__.get("_all_weights")
    count = num_layers * (2 if bidirectional else 1)
    if not isinstance(names, list) or len(names) != count:
        raise StateError(f"{type(module).__name__}._all_weights must list {count} layer-directions "
                         f"(num_layers={num_layers}, bidirectional={bidirectional}), got {_describe(names)}")
    shapes = weight_shapes(module.mode, input_size, hidden_size, num_layers, bidirectional, bias, proj_size)
    want = weight_names(num_layers, bidirectional, [list(s) for s in shapes])
    if names != want:
        raise StateError(f"{type(module).__name__}._all_weights must be {want}, got {names!r}")
    for k_names, k_shapes in zip(want, shapes):
        _check_parameters(module, dict(zip(k_names, k_shapes.values())))


def check_cell_state(module) -> None:
    """An RNNCell/LSTMCell/GRUCell just unpickled (sizes may be 0, as torch.nn's cells allow)."""
    _common(module, RNN_MODES)
    input_size = _size(module, "input_size", 0)
    hidden_size = _size(module, "hidden_size", 0)
    bias = module.__dict__.get("bias")
    if not isinstance(bias, (bool, numbers.Integral)):
        raise StateError(f"{type(module).__name__}.bias must be a bool, got {bias!r}")
    gate_size = get_cell(module.mode).num_gates * hidden_size
    expected = {"weight_ih": (gate_size, input_size), "weight_hh": (gate_size, hidden_size)}
    if bias:
        expected.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
    elif any(module._parameters.get(name) is not None for name in ("bias_ih", "bias_hh")):
        raise StateError(f"{type(module).__name__}: bias={bias!r} but the state holds bias parameters")
    _check_parameters(module, expected)


_FLAT_SHAPES: Dict[tuple, list] = {}  # module sizes -> the shapes of its _flat_weights (a few entries)


def sizes_of(module) -> tuple:
    """What the shapes of a module's weights follow from, as :func:`weight_shapes` takes it: a
    plain tuple, the key of :func:`check_weights`'s table (a forward builds it once and keys its
    backend decision with it too)."""
    return (module.mode, module.input_size, module.hidden_size, module.num_layers, module.bidirectional,
            module.bias, module.proj_size)


def _flat_shapes(sizes: tuple, count: int) -> list:
    shapes = _FLAT_SHAPES.get(sizes)
    if shapes is None:
        mode, input_size, hidden_size, num_layers, bidirectional, bias, proj_size = sizes
        # The count first: nothing is built from sizes the weights do not bear out.
        kinds = 2 + 2 * bool(bias) + (proj_size > 0)
        if count != num_layers * (2 if bidirectional else 1) * kinds:
            raise ValueError(f"{count} weights for num_layers={num_layers}, "
                             f"bidirectional={bidirectional}, bias={bias}, proj_size={proj_size}")
        shapes = [shape for per_direction in weight_shapes(mode, input_size, hidden_size, num_layers, bidirectional,
                                                           bias, proj_size)
                  for shape in per_direction.values()]
        if len(_FLAT_SHAPES) < 1024:
            _FLAT_SHAPES[sizes] = shapes
    return shapes


def check_weights(module, weights, sizes: tuple = None) -> None:
    """Before a backend reads ``weights`` (the module's ``_flat_weights``): their shapes are the
    ones the module's attributes imply (attributes may have been changed after load). ``sizes``:
    :func:`sizes_of` the module, when the caller has it already."""
    try:
        shapes = [w.shape for w in weights]
    except AttributeError:  # a weight deleted (weight-drop code does, between forwards): None
        missing = module._flat_weights_names[[w is None for w in weights].index(True)]
        raise AttributeError(f"'{type(module).__name__}' object has no attribute '{missing}'") from None
    try:
        if sizes is None:
            sizes = sizes_of(module)
        want = _FLAT_SHAPES.get(sizes)  # (the common case inline: every forward asks)
        if want is None:
            want = _flat_shapes(sizes, len(weights))
    except (TypeError, ValueError) as e:  # a count that does not match; unhashable or unknown values
        raise StateError(f"{type(module).__name__}: its attributes do not describe its weights: {e}") from None
    if shapes != want:  # torch.Size equals the tuple of its sizes
        got = [tuple(w.shape) for w in weights]
        raise StateError(
            f"{type(module).__name__}: weights of shapes {got} do not match the module's sizes "
            f"(input_size={module.input_size}, hidden_size={module.hidden_size}, num_layers={module.num_layers}, "
            f"proj_size={module.proj_size}, bias={module.bias}, bidirectional={module.bidirectional}), which "
            f"need {want}"
        )


def _describe(value) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
