"""Backend registry and selection: the one place a call decides which backend runs it.

A backend runs one layer in one direction over a whole padded sequence (``run_layer``, the seam
of :mod:`fastrnn.functional`), and may run a whole module (``run_module``) or a cell step
(``run_cell``) its own way. Every call decides once: a module or cell forward calls
:func:`choose` once and runs everything on that backend; :func:`run_layer` (used by
:mod:`fastrnn.functional` and by the operator of :mod:`fastrnn.ops`) decides once per
layer-direction and runs it. Which backend runs is decided, first match wins, by

1. the module's (or functional call's) ``backend=`` argument, when it is not ``"auto"``;
2. the innermost ``with fastrnn.use_backend(name):`` block, when it is not ``"auto"``;
3. the ``FASTRNN_BACKEND`` environment variable, when set and not ``"auto"``;
4. otherwise ``"auto"``: the first backend in priority order that is available, admitted to
   ``auto`` for the problem and supports it. The order is: fastrnn's kernel backends (admitted
   only for configurations verified on that GPU and measured faster than torch there, see
   :mod:`fastrnn.measured`), then ``"torch"`` (torch's own kernels: oneDNN/ATen on the CPU,
   cuDNN on a GPU), then ``"reference"``, which supports everything.

A backend named explicitly (1-3) either runs or raises :class:`BackendError` saying why; it is
never silently replaced by another. :func:`explain` reports the decision and the reason each
skipped backend was skipped.

``use_backend`` is a process-wide setting, like ``torch.backends.cudnn.flags``: threads started
inside the block see it (and so would other threads running at the same time). A
``contextvars.ContextVar`` would hide it from new threads, and TorchDynamo cannot trace one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Union

import torch

from .cells import Cell
from .tracing import tracing

ENV_VAR = "FASTRNN_BACKEND"
AUTO = "auto"


class BackendError(RuntimeError):
    """An explicitly requested backend cannot run the given problem."""


class LayerProblem(NamedTuple):
    """What a backend needs to know to say whether it can run one layer-direction.

    (A NamedTuple, not a dataclass: one is built per forward call, and a frozen dataclass costs
    several microseconds to build.)
    """

    cell: Cell
    device: torch.device
    dtype: torch.dtype
    input_size: int
    hidden_size: int
    proj_size: int  # 0: no projection
    batch_size: int
    seq_len: int
    has_bias: bool
    has_lengths: bool
    # The stack around the layer, for backends that run a whole module in one call (run_module).
    num_layers: int = 1
    bidirectional: bool = False


def layer_problem(cell: Cell, x, weight_hh, weight_hr, has_bias: bool, has_lengths: bool) -> LayerProblem:
    """The problem of one layer-direction with input ``x`` (T, B, I) and recurrent weight
    ``weight_hh`` (G*H, H_out) (and projection ``weight_hr``, or None)."""
    return LayerProblem(
        cell=cell,
        device=x.device,
        dtype=x.dtype,
        input_size=x.shape[2],
        hidden_size=weight_hh.shape[0] // cell.num_gates,
        proj_size=0 if weight_hr is None else weight_hr.shape[0],
        batch_size=x.shape[1],
        seq_len=x.shape[0],
        has_bias=has_bias,
        has_lengths=has_lengths,
    )


# Where a run_layer / run_module / run_cell named as "package.module:function" is found: resolved
# on first use, so registering a backend imports none of its kernels (and its registration
# module need not import its autograd module, which imports the kernels and the registration's
# helpers: no circle, no trampoline function).
_ENTRY_POINTS: Dict[str, Callable] = {}


def resolve(entry: Union[str, Callable, None]) -> Optional[Callable]:
    """``entry`` itself, or the function a ``"module:function"`` string names (imported now)."""
    if not isinstance(entry, str):
        return entry
    function = _ENTRY_POINTS.get(entry)
    if function is None:
        module, _, name = entry.partition(":")
        function = _ENTRY_POINTS[entry] = getattr(importlib.import_module(module), name)
    return function


# Every backend's run_module unless it has its own: the generic stack of layers x directions.
GENERIC_STACK = "fastrnn.layer_stack:run_module"


@dataclass
class Backend:
    """A registered backend.

    ``unavailable`` returns why the backend cannot run at all here (None when it can);
    ``unsupported`` returns why it cannot run a given problem (None when it can); ``run_layer``
    has the signature of :func:`fastrnn.reference.reference_layer`. ``auto`` says whether
    ``backend="auto"`` may pick it: True, False (only run when named), or a function of the
    problem returning why not (None: admitted), as kernel backends use for
    :mod:`fastrnn.measured`. ``run_module`` runs a whole RNN/LSTM/GRU module's forward with the
    signature of :func:`fastrnn.layer_stack.run_module`; by default that generic stack, which
    calls ``run_layer`` per layer-direction (:func:`fastrnn.torch_backend.run_module` makes one
    call for the whole stack instead). ``run_cell``, when set, runs one step of a cell module
    (see :func:`fastrnn.torch_backend.run_cell`); without it a cell step is ``run_layer`` over
    one step. ``note`` returns what a user should know about running a problem on this backend
    that cannot be decided at forward time (None: nothing).

    ``run_layer``, ``run_module`` and ``run_cell`` are functions or ``"module:function"``
    strings, imported when first used (:func:`resolve`): kernel backends name their autograd
    entry point so that registering them imports no kernel.

    ``training``, when set (an object or a ``"module:attribute"`` string), is the backend's
    training form for compiled training (:mod:`fastrnn.ops`), a :class:`fastrnn.fused.TrainingForm`:
    its kernel forward returning what its backward needs, and that backward, called directly.
    Without one, a compiled training step keeps the backend's autograd graph instead.
    """

    name: str
    priority: int  # higher is tried first under "auto"
    run_layer: Union[str, Callable]
    unavailable: Callable[[], Optional[str]] = lambda: None
    unsupported: Callable[[LayerProblem], Optional[str]] = lambda problem: None
    auto: Union[bool, Callable[[LayerProblem], Optional[str]]] = True
    run_module: Union[str, Callable] = GENERIC_STACK
    run_cell: Union[str, Callable, None] = None
    note: Callable[[LayerProblem], Optional[str]] = lambda problem: None
    training: Union[str, object, None] = None

    def not_auto(self, problem: LayerProblem) -> Optional[str]:
        """Why ``auto`` may not pick this backend for ``problem`` (None: it may)."""
        if callable(self.auto):
            return self.auto(problem)
        return None if self.auto else "not yet verified on real hardware; only run when named"

    # (Each forward asks: a registered function is returned without a call of resolve.)
    def layer_runner(self) -> Callable:
        """``run_layer`` as a function."""
        run_layer = self.run_layer
        return run_layer if not isinstance(run_layer, str) else resolve(run_layer)

    def module_runner(self) -> Callable:
        """``run_module`` as a function."""
        run_module = self.run_module
        return run_module if not isinstance(run_module, str) else resolve(run_module)

    def cell_runner(self) -> Optional[Callable]:
        """``run_cell`` as a function, or None (a cell step runs as a one-step layer)."""
        run_cell = self.run_cell
        return run_cell if not isinstance(run_cell, str) else resolve(run_cell)


_REGISTRY: Dict[str, Backend] = {}
_BY_PRIORITY: List[Backend] = []  # _REGISTRY's values, highest priority first
# The innermost use_backend() block's name, process-wide (see the module docstring).
_context_backend: Optional[str] = None


def register_backend(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend
    forget_decisions()


# Decisions of explain(), keyed by everything they depend on: the problem, the request (argument,
# use_backend, environment) and the registry. Every forward asks, and asking again costs more than
# a small layer's whole step; the support checks are functions of the problem alone.
_DECISIONS: Dict[tuple, "BackendChoice"] = {}
_KEYED_DECISIONS: Dict[tuple, "Backend"] = {}  # choose_by_key's, for the per-call hot paths
_REGISTRY_VERSION = [0]


def forget_decisions() -> None:
    """Drop remembered backend decisions: call it after changing what a support check reads
    (the registry does it by itself)."""
    _DECISIONS.clear()
    _KEYED_DECISIONS.clear()
    _REGISTRY_VERSION[0] += 1


def _by_priority() -> List[Backend]:
    # Rebuilt when the registry changed (tests add and remove backends by hand).
    if len(_BY_PRIORITY) != len(_REGISTRY) or any(_REGISTRY.get(b.name) is not b for b in _BY_PRIORITY):
        _BY_PRIORITY[:] = sorted(_REGISTRY.values(), key=lambda b: -b.priority)
    return _BY_PRIORITY


def registered_backends() -> List[str]:
    """Names of all registered backends, highest ``auto`` priority first."""
    return [b.name for b in _by_priority()]


def check_backend_name(name: str, where: str = "backend") -> str:
    if not isinstance(name, str) or (name != AUTO and name not in _REGISTRY):
        choices = ", ".join(repr(n) for n in [AUTO] + registered_backends())
        raise ValueError(f"{where} must be one of {choices}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run fastrnn layers inside the block on backend ``name`` (unless a module names its own).

    Process-wide while the block runs: threads started inside it see it too.
    """
    global _context_backend
    previous, _context_backend = _context_backend, check_backend_name(name, "use_backend(name)")
    try:
        yield
    finally:
        _context_backend = previous


@dataclass
class BackendChoice:
    """The outcome of backend selection for one problem."""

    backend: str
    requested: str
    requested_by: str
    skipped: Dict[str, str] = field(default_factory=dict)  # name -> why it was not chosen
    note: Optional[str] = None  # what the chosen backend cannot decide at forward time

    def __str__(self) -> str:
        lines = [f"backend {self.backend!r} (requested {self.requested!r} by {self.requested_by})"]
        if self.note:
            lines.append(f"  note: {self.note}")
        lines += [f"  skipped {name!r}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _requested(argument: str) -> tuple:
    if argument != AUTO:
        return argument, "the backend= argument"
    context = _context_backend
    if context is not None and context != AUTO:
        return context, "fastrnn.use_backend()"
    env = (_env_setting() or "").strip()
    if env and env != AUTO:
        return check_backend_name(env, f"the {ENV_VAR} environment variable"), ENV_VAR
    return AUTO, "default"


def explain(problem: LayerProblem, argument: str = AUTO) -> BackendChoice:
    """Decide which backend runs ``problem``; raise BackendError if a named one cannot."""
    if tracing():
        # Sizes may be symbolic (hashing them would specialise), and backends decide differently.
        return _decide(problem, argument)
    key = (problem, argument, _context_backend, _env_setting(), _REGISTRY_VERSION[0], len(_REGISTRY))
    choice = _DECISIONS.get(key)
    if choice is None:
        choice = _decide(problem, argument)
        if len(_DECISIONS) > 1024:
            _DECISIONS.clear()
        _DECISIONS[key] = choice
    return choice


def _decide(problem: LayerProblem, argument: str) -> BackendChoice:
    requested, requested_by = _requested(check_backend_name(argument))
    if requested != AUTO:
        backend = _REGISTRY[requested]
        why = backend.unavailable() or backend.unsupported(problem)
        if why is not None:
            raise BackendError(
                f"fastrnn backend {requested!r} was requested by {requested_by} but cannot run "
                f"this {problem.cell.name} layer: {why}. Use backend='auto' to fall back."
            )
        return BackendChoice(requested, requested, requested_by, note=backend.note(problem))
    skipped: Dict[str, str] = {}
    for backend in _by_priority():
        why = backend.not_auto(problem) or backend.unavailable() or backend.unsupported(problem)
        if why is None:
            return BackendChoice(backend.name, AUTO, requested_by, skipped, backend.note(problem))
        skipped[backend.name] = why
    raise BackendError(f"no fastrnn backend can run this problem: {skipped}")


def _env_setting() -> Optional[str]:
    """The raw value of FASTRNN_BACKEND, or None. Read on every call (a test or a user may set it
    between calls), so from CPython's own dict behind ``os.environ`` where there is one: a dict
    lookup instead of encoding the key (os.environ's item assignment keeps that dict current)."""
    if _ENV_DATA is None:
        return os.environ.get(ENV_VAR)
    value = _ENV_DATA.get(_ENV_KEY)
    return None if value is None else os.environ.decodevalue(value)


try:  # POSIX CPython: bytes -> bytes; Windows: upper-case str -> str
    _ENV_DATA, _ENV_KEY = os.environ._data, os.environ.encodekey(ENV_VAR)
except AttributeError:  # pragma: no cover - another Python
    _ENV_DATA = _ENV_KEY = None


def get_backend(name: str) -> Backend:
    return _REGISTRY[check_backend_name(name)]


def choose(problem: LayerProblem, argument: str = AUTO) -> Backend:
    """The backend that runs ``problem`` (see :func:`explain`): the one decision of a call."""
    return _REGISTRY[explain(problem, argument).backend]


def choose_by_key(key: tuple, problem_of: Callable[[], LayerProblem], argument: str = AUTO) -> Backend:
    """:func:`choose` for the per-call hot paths of modules and cells (eager mode, not traced).

    ``key`` is a plain tuple of every value ``problem_of()`` builds its problem from; a call
    whose decision was taken before under the same settings costs one tuple hash instead of
    building the problem and deciding again (a cell step at batch 1 is a few microseconds in
    all, and torch.nn's own is the yardstick). Settings are as :func:`explain`'s cache keys them.
    """
    # (the variable's raw value, read as _env_setting() reads it, inline: this runs every call)
    env = _ENV_DATA.get(_ENV_KEY) if _ENV_DATA is not None else os.environ.get(ENV_VAR)
    full = (key, argument, _context_backend, env, _REGISTRY_VERSION[0], len(_REGISTRY))
    backend = _KEYED_DECISIONS.get(full)
    if backend is None:
        backend = choose(problem_of(), argument)
        if len(_KEYED_DECISIONS) > 1024:
            _KEYED_DECISIONS.clear()
        _KEYED_DECISIONS[full] = backend
    return backend


def run_layer(cell: Cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse,
              backend: str = AUTO):
    """Decide once and run one layer-direction (arguments checked by the caller: see
    :func:`fastrnn.functional.rnn_layer`); returns (out, h_T, c_T or None)."""
    problem = layer_problem(cell, x, weight_hh, weight_hr, bias_ih is not None, lengths is not None)
    return choose(problem, backend).layer_runner()(
        cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, reverse
    )
