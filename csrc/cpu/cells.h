// The cells' ids, gate counts and saved values, as fastrnn/cells.py numbers them (kernel_id).
// The update formulas are in pointwise_<cell>.h; fastrnn/cells.py states them in one place.
#pragma once

// static: internal linkage, so the instruction-set builds never share a compiled copy (vec.h).

namespace fastrnn_cpu {

enum CellId { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3 };

static constexpr int num_gates(int cell) { return cell == LSTM ? 4 : cell == GRU ? 3 : 1; }

// Values per hidden unit and step the forward saves for the backward (Elman: none, out is enough).
//   LSTM: i, f, g, o (activated), c_t          GRU: r, z, n, W_hn h + b_hn
static constexpr int num_saved(int cell) { return cell == LSTM ? 5 : cell == GRU ? 4 : 0; }

}  // namespace fastrnn_cpu
