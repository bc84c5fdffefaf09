// Work split and shared-memory layout of the persistent kernels (forward.cuh, backward.cuh),
// shared by the kernels and the host launcher (csrc/launch.h). Plain C++ arithmetic, no CUDA
// runtime calls. fastrnn/cuda/capacity.py restates the same arithmetic in Python for the
// support check; tests/test_cuda_backend.py checks the two agree (through fastrnn._C.plan).
//
// A layer-direction with hidden size H and G gates runs on P blocks; block p owns the hidden
// units [p*U, min(H, (p+1)*U)) with all G of their gates (U = units per block), so the cell
// update is local to the block. Shared memory of one block:
//   forward:  W_hh rows of its units           G*U rows x H      (storage dtype)
//             + a tile of h_{t-1}              BT rows x H       (fp32)
//   backward: W_hh columns of its units        U x G*H           (storage dtype, transposed)
//             + a tile of the gate gradients   BT rows x G*H     (fp32)
// BT = batch rows staged per pass (1..kMaxBatchTile); both kernels loop over batch tiles.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTRNN_LAYOUT_HD __host__ __device__
#else
#define FASTRNN_LAYOUT_HD
#endif

namespace fastrnn {

constexpr int kThreads = 256;      // threads per block (8 warps)
constexpr int kMaxBatchTile = 8;   // batch rows staged in shared memory per pass

FASTRNN_LAYOUT_HD constexpr int64_t align_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

// Bytes of the resident weight slice (same size forward and backward).
FASTRNN_LAYOUT_HD constexpr int64_t weight_smem_bytes(int gates, int itemsize, int64_t hidden, int64_t units) {
  return align_up(static_cast<int64_t>(gates) * units * hidden * itemsize, 16);
}

// Bytes per staged batch row: h_{t-1} (H floats) forward, gate gradients (G*H floats) backward.
FASTRNN_LAYOUT_HD constexpr int64_t row_smem_bytes(int gates, int64_t hidden, bool backward) {
  return (backward ? gates * hidden : hidden) * static_cast<int64_t>(sizeof(float));
}

FASTRNN_LAYOUT_HD constexpr int64_t smem_bytes(int gates, int itemsize, int64_t hidden, int64_t units, int batch_tile, bool backward) {
  return weight_smem_bytes(gates, itemsize, hidden, units) + batch_tile * row_smem_bytes(gates, hidden, backward);
}

struct Plan {
  int blocks = 0;       // P; 0: does not fit
  int units = 0;        // U, hidden units per block
  int batch_tile = 0;   // BT
  int64_t smem = 0;     // dynamic shared memory bytes per block
};

// The launch plan: as many blocks as SMs allow (at most one per hidden unit), so each holds the
// smallest slice; then the largest batch tile that still fits `smem_per_block` bytes.
// Returns blocks == 0 when even BT = 1 does not fit.
inline Plan make_plan(int gates, int itemsize, int64_t hidden, int64_t batch, int num_sms, int64_t smem_per_block,
                      bool backward) {
  Plan plan;
  if (hidden <= 0 || num_sms <= 0) return plan;
  const int64_t blocks = hidden < num_sms ? hidden : num_sms;
  const int64_t units = (hidden + blocks - 1) / blocks;
  const int64_t used_blocks = (hidden + units - 1) / units;  // no block without units
  const int64_t max_tile = batch < kMaxBatchTile ? (batch > 0 ? batch : 1) : kMaxBatchTile;
  for (int64_t tile = max_tile; tile >= 1; --tile) {
    const int64_t bytes = smem_bytes(gates, itemsize, hidden, units, static_cast<int>(tile), backward);
    if (bytes <= smem_per_block) {
      plan.blocks = static_cast<int>(used_blocks);
      plan.units = static_cast<int>(units);
      plan.batch_tile = static_cast<int>(tile);
      plan.smem = bytes;
      return plan;
    }
  }
  return plan;
}

}  // namespace fastrnn
