"""Which cell a kernel runs (its constexpr ``CELL``) and what the forward saves for backward.

Plain Python (no Triton import), shared by the launchers and resources.py. The ids are
:mod:`fastrnn.cells`' ``kernel_id``; the kernels compare ``CELL`` with the names cell_step.py
makes of them (``LSTM``, ``GRU``, ``RNN_RELU``), never with a number.
"""

from .. import cells

CELL_IDS = {cell.name: cell.kernel_id for cell in cells.CELLS.values()}  # ids: fastrnn/cells.py
RNN_TANH, RNN_RELU, LSTM, GRU = (CELL_IDS[name] for name in ("rnn_tanh", "rnn_relu", "lstm", "gru"))

# fp32 values per hidden unit and step that the forward kernel saves for the backward kernel,
# in a (T, B, NUM_SAVED * H) buffer: Elman h; LSTM i, f, g, o, c; GRU r, z, n, gh_n (which block
# holds what, and why: cell_step.py, where the forward step writes and the backward step reads it).
NUM_SAVED = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 5, GRU: 4}


def kernel_constants(cell) -> dict:
    """The constexprs that say which cell a kernel runs: CELL (id), G (gates), S (saved values)."""
    return dict(CELL=cell.kernel_id, G=cell.num_gates, S=NUM_SAVED[cell.kernel_id])
