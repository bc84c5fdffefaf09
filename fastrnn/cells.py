"""The one place each recurrent cell is defined: gates, gate order and the update equations.

Every cell is written as a function of the two pre-activations torch.nn also uses:

    gx = W_ih x_t + b_ih          (input projection, computed for all steps at once)
    gh = W_hh h_{t-1} + b_hh      (recurrent product, one per step)

with gate blocks stacked along the last dimension in torch.nn's row order of ``weight_ih`` /
``weight_hh``:

    Elman (tanh / relu), 1 gate:  h' = act(gx + gh)
    LSTM, gates i, f, g, o:       i = s(gx_i + gh_i), f = s(gx_f + gh_f), g = tanh(gx_g + gh_g),
                                  o = s(gx_o + gh_o);  c' = f * c + i * g;  h' = o * tanh(c')
                                  (with proj_size: h' = W_hr (o * tanh(c')), applied by the layer)
    GRU, gates r, z, n:           r = s(gx_r + gh_r), z = s(gx_z + gh_z),
                                  n = tanh(gx_n + r * gh_n);  h' = (1 - z) * n + z * h

(s is the logistic sigmoid.) Only the GRU needs ``gh`` apart from ``gx``: its reset gate multiplies
the recurrent product *including* ``b_hn``. For the other cells ``gx + gh`` is all that matters, so
a layer may fold ``b_hh`` into ``gx`` and the recurrent product into it too (``addmm``), and
then passes ``gh=None`` (``sums_preactivations``).

The ``update`` functions are plain differentiable torch code: the reference backend runs them as
they are (autograd gives backward and double backward), and kernel backends are tested against
them.

Everything else reads this table (gate counts, whether there is a cell state, whether ``b_hh``
folds into ``gx``, the kernels' cell id); nothing restates it. Adding a cell (LayerNorm-LSTM,
sLSTM, IndRNN), in order:

1. here: its ``update`` and a ``Cell`` in :data:`CELLS` with ``kernel_id=None``. The reference
   backend runs it at once, the functional API and tracing too (``fastrnn::rnn_layer`` takes any
   cell name); backend ``torch`` refuses it (``torch_backend._STACK`` has no torch kernel for
   it), and so do the kernel backends while ``kernel_id`` is None;
2. tests: tests/test_cells.py against the equations, a module class if it has a torch.nn-like
   spelling (fastrnn/modules/);
3. Triton: the pointwise forward/backward in ``triton/cell_pointwise.py``, a branch under the
   cell's name in ``triton/cell_step.py`` (``forward_step``, ``backward_step``: gate loads, the
   saved layout), its saved-value count in ``triton/cell_ids.NUM_SAVED``; then a ``kernel_id``
   here, and the capacity of its gate count in ``triton/capacity.py`` if that is new;
4. CUDA: a trait struct in ``kernels/cell_math.cuh`` (``kId``, ``kName``, ``kGates``,
   ``kSaved``, forward/backward) and its case in ``csrc/launch.h``'s ``dispatch_cell``; the
   host code reads everything else from the traits;
5. ONNX (``fastrnn/onnx.py``: ``_ONNX_OP``, ``_GATE_ORDER``): only if an ONNX operator
   expresses it; an unmapped cell's export raises ``OnnxExportError`` saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

CellUpdate = Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], Tuple[Tensor, Optional[Tensor]]]


@dataclass(frozen=True, eq=False)
class Cell:
    """Static description of a recurrent cell (one instance per cell: compared by identity)."""

    name: str  # fastrnn's name: "rnn_tanh", "rnn_relu", "lstm", "gru"
    mode: str  # torch.nn's mode string: "RNN_TANH", "RNN_RELU", "LSTM", "GRU"
    gates: Tuple[str, ...]  # gate blocks in weight row order
    has_cell_state: bool  # LSTM carries c besides h
    sums_preactivations: bool  # update depends on gx + gh only, so b_hh may be folded into gx
    update: CellUpdate  # (gx_t, gh_t, h, c) -> (h', c'); c and c' are None without cell state
    kernel_id: Optional[int]  # the fused kernels' cell id (Triton's constexpr CELL, CUDA's CellId); None: no kernel

    @property
    def num_gates(self) -> int:
        return len(self.gates)


def _sum(gx: Tensor, gh: Optional[Tensor]) -> Tensor:
    return gx if gh is None else gx + gh


def _elman_tanh(gx: Tensor, gh: Optional[Tensor], h: Tensor, c: Optional[Tensor]):
    return torch.tanh(_sum(gx, gh)), None


def _elman_relu(gx: Tensor, gh: Optional[Tensor], h: Tensor, c: Optional[Tensor]):
    return torch.relu(_sum(gx, gh)), None


def _lstm(gx: Tensor, gh: Optional[Tensor], h: Tensor, c: Optional[Tensor]):
    pre = _sum(gx, gh)
    # One sigmoid over all four blocks (g's share is unused) costs less than three small ones.
    i, f, _, o = torch.sigmoid(pre).chunk(4, dim=-1)
    g = torch.tanh(pre.narrow(-1, 2 * c.shape[-1], c.shape[-1]))
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    return h_new, c_new


def _gru(gx: Tensor, gh: Tensor, h: Tensor, c: Optional[Tensor]):
    gx_r, gx_z, gx_n = gx.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(gx_r + gh_r)
    z = torch.sigmoid(gx_z + gh_z)
    n = torch.tanh(gx_n + r * gh_n)
    return n + z * (h - n), None  # = (1 - z) * n + z * h


RNN_TANH = Cell("rnn_tanh", "RNN_TANH", ("h",), False, True, _elman_tanh, 0)
RNN_RELU = Cell("rnn_relu", "RNN_RELU", ("h",), False, True, _elman_relu, 1)
LSTM = Cell("lstm", "LSTM", ("i", "f", "g", "o"), True, True, _lstm, 2)
GRU = Cell("gru", "GRU", ("r", "z", "n"), False, False, _gru, 3)

CELLS = {cell.name: cell for cell in (RNN_TANH, RNN_RELU, LSTM, GRU)}
_BY_MODE = {cell.mode: cell for cell in CELLS.values()}


def cell_of(module) -> Cell:
    """The cell a recurrent module runs, looked up from its torch.nn ``mode`` string.

    Modules keep only ``mode`` (plain data) and reach their Cell through this, so a pickled
    module holds no functions (``torch.load(weights_only=True)`` can read it), and torch.nn's
    own modules, which also carry ``mode``, can run fastrnn's forward (:func:`fastrnn.patch`).
    """
    cell = _BY_MODE.get(module.mode)  # (a forward asks several times: the common case inline)
    return cell if cell is not None else get_cell(module.mode)


def get_cell(name_or_mode: str) -> Cell:
    """Look a cell up by fastrnn name ("lstm") or torch.nn mode ("LSTM")."""
    cell = CELLS.get(name_or_mode) or _BY_MODE.get(name_or_mode)
    if cell is None:
        raise ValueError(
            f"unknown cell {name_or_mode!r}; expected one of {sorted(CELLS)} or {sorted(_BY_MODE)}"
        )
    return cell
