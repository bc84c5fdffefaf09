"""FLOP counts of a recurrent layer stack (what "achieved TFLOP/s" divides by).

Only the matrix products are counted, as is customary: per layer and direction the input
projection (``2*T*B*G*H*I_l``) and the recurrent products (``2*T*B*G*H*H``), i.e.
``2*T*B*G*H*(I_l + H)``, where G is the number of gate blocks (1 Elman, 3 GRU, 4 LSTM) and
``I_l`` is ``input_size`` for the first layer and ``H * directions`` above it. The pointwise gate
math is ignored (it is O(T*B*G*H), a small fraction once H is more than a few dozen).

Backward is counted as twice the forward (one product for the gradient of each operand), so a
training step (forward + backward) is three times the forward.
"""

from __future__ import annotations

from ..cells import CELLS


def forward_flops(cell: str, batch: int, seq_len: int, input_size: int, hidden_size: int,
                  layers: int = 1, bidirectional: bool = False) -> int:
    gates = CELLS[cell].num_gates
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(layers):
        layer_input = input_size if layer == 0 else hidden_size * directions
        total += directions * 2 * seq_len * batch * gates * hidden_size * (layer_input + hidden_size)
    return total


def training_flops(*args, **kwargs) -> int:
    """Forward + backward, backward counted as 2x forward."""
    return 3 * forward_flops(*args, **kwargs)
