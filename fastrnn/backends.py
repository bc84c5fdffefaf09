"""Backend registry and selection.

A backend runs one layer in one direction over a whole padded sequence (the seam in
:mod:`fastrnn.functional`). Which backend runs is decided, first match wins, by

1. the module's (or functional call's) ``backend=`` argument, when it is not ``"auto"``;
2. the innermost ``with fastrnn.use_backend(name):`` block, when it is not ``"auto"``;
3. the ``FASTRNN_BACKEND`` environment variable, when set and not ``"auto"``;
4. otherwise ``"auto"``: the first backend in priority order that is available, trusted for
   ``auto`` and supports the problem; the reference backend supports everything.

A backend named explicitly (1-3) either runs or raises :class:`BackendError` saying why; it is
never silently replaced by another. :func:`explain` reports the decision and the reason each
skipped backend was skipped.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import torch

from .cells import Cell

ENV_VAR = "FASTRNN_BACKEND"
AUTO = "auto"


class BackendError(RuntimeError):
    """An explicitly requested backend cannot run the given problem."""


@dataclass(frozen=True)
class LayerProblem:
    """What a backend needs to know to say whether it can run one layer-direction."""

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


@dataclass
class Backend:
    """A registered backend.

    ``unavailable`` returns why the backend cannot run at all here (None when it can);
    ``unsupported`` returns why it cannot run a given problem (None when it can); ``run_layer``
    has the signature of :func:`fastrnn.reference.reference_layer`. ``auto`` says whether
    ``backend="auto"`` may pick it (a backend not yet verified on real hardware is only run when
    asked for by name).
    """

    name: str
    priority: int  # higher is tried first under "auto"
    run_layer: Callable
    unavailable: Callable[[], Optional[str]] = lambda: None
    unsupported: Callable[[LayerProblem], Optional[str]] = lambda problem: None
    auto: bool = True


_REGISTRY: Dict[str, Backend] = {}
_CONTEXT: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "fastrnn_backend", default=None
)


def register_backend(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def registered_backends() -> List[str]:
    """Names of all registered backends, highest ``auto`` priority first."""
    return [b.name for b in sorted(_REGISTRY.values(), key=lambda b: -b.priority)]


def check_backend_name(name: str, where: str = "backend") -> str:
    if not isinstance(name, str) or (name != AUTO and name not in _REGISTRY):
        choices = ", ".join(repr(n) for n in [AUTO] + registered_backends())
        raise ValueError(f"{where} must be one of {choices}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run fastrnn layers inside the block on backend ``name`` (unless a module names its own)."""
    token = _CONTEXT.set(check_backend_name(name, "use_backend(name)"))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


@dataclass
class BackendChoice:
    """The outcome of backend selection for one problem."""

    backend: str
    requested: str
    requested_by: str
    skipped: Dict[str, str] = field(default_factory=dict)  # name -> why it was not chosen

    def __str__(self) -> str:
        lines = [f"backend {self.backend!r} (requested {self.requested!r} by {self.requested_by})"]
        lines += [f"  skipped {name!r}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _requested(argument: str) -> tuple:
    if argument != AUTO:
        return argument, "the backend= argument"
    context = _CONTEXT.get()
    if context is not None and context != AUTO:
        return context, "fastrnn.use_backend()"
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env != AUTO:
        return check_backend_name(env, f"the {ENV_VAR} environment variable"), ENV_VAR
    return AUTO, "default"


def explain(problem: LayerProblem, argument: str = AUTO) -> BackendChoice:
    """Decide which backend runs ``problem``; raise BackendError if a named one cannot."""
    requested, requested_by = _requested(check_backend_name(argument))
    if requested != AUTO:
        backend = _REGISTRY[requested]
        why = backend.unavailable() or backend.unsupported(problem)
        if why is not None:
            raise BackendError(
                f"fastrnn backend {requested!r} was requested by {requested_by} but cannot run "
                f"this {problem.cell.name} layer: {why}. Use backend='auto' to fall back."
            )
        return BackendChoice(requested, requested, requested_by)
    skipped: Dict[str, str] = {}
    for name in registered_backends():
        backend = _REGISTRY[name]
        why = (
            None if backend.auto else "not yet verified on real hardware; only run when named"
        ) or backend.unavailable() or backend.unsupported(problem)
        if why is None:
            return BackendChoice(name, AUTO, requested_by, skipped)
        skipped[name] = why
    raise BackendError(f"no fastrnn backend can run this problem: {skipped}")


def get_backend(name: str) -> Backend:
    return _REGISTRY[check_backend_name(name)]
