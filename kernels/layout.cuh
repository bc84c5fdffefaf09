// Work split and shared-memory layout of the persistent kernels (forward.cuh, backward.cuh),
// shared by the kernels and the host launcher (csrc/launch.h). Plain C++ arithmetic, no CUDA
// runtime calls. fastrnn/cuda/capacity.py restates the same arithmetic in Python for the
// support check; tests/test_cuda_backend.py checks the two agree (through fastrnn._C.plan).
//
// A layer-direction with hidden size H and G gates runs on P blocks; block p owns the hidden
// units [p*U, min(H, (p+1)*U)) with all G of their gates (U = units per block), so the cell
// update is local to the block. Each step a block computes one small product
//     C (M x BT) = A (M x K) . B^T,   B: BT rows of K values            (block_product.cuh)
// forward:  A = W_hh rows of its units   (M = G*U, K = H),   B = h_{t-1} of BT sequences
// backward: A = W_hh columns, transposed (M = U,   K = G*H), B = dgates of BT sequences
// Shared memory of one block, in this order:
//   A         M rows x ld        storage dtype, resident for all T steps
//   B         BT rows x ld       storage dtype, restaged every step and batch tile
//   partials  kWarps x ceil(M/16)*16 x partial_ld(BT) fp32: each warp's share of C (split over K)
// Rows are padded to ld = align_up(K, 16) + 8 elements: whole 16-wide k-tiles never leave a
// row, and a row stride of 8 (mod 16) elements puts the 8 rows one mma fragment load touches in
// 8 different bank groups (no conflicts). BT = batch rows per pass (1..kMaxBatchTile): the plan
// takes the fewest passes that fit, balanced over the batch, so a step usually needs one pass
// (two block barriers) per block.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTRNN_LAYOUT_HD __host__ __device__
#else
#define FASTRNN_LAYOUT_HD
#endif

namespace fastrnn {

constexpr int kThreads = 256;      // threads per block

// Timing variants of the persistent kernels (ForwardArgs / BackwardArgs::variant; 0 = the real
// kernel). Each drops one part of a step so bench/kernel_timing.cu can show where a step's time
// goes; the results are then wrong, so only that benchmark sets them.
constexpr uint32_t kVariantSkipStaging = 1;   // no copy of h / dgates into shared memory
constexpr uint32_t kVariantNoPrefetch = 2;    // next step's inputs not fetched early (L2 prefetch / register loads)
constexpr uint32_t kVariantSkipProduct = 4;   // no recurrent product (partials left as they are)
constexpr uint32_t kVariantBlockStaging = 8;  // forward: block-wide staging even for one tile (results right)
constexpr int kWarps = kThreads / 32;
constexpr int kTileM = 16, kTileN = 8, kTileK = 16;  // mma.m16n8k16 (block_product.cuh)
constexpr int kMaxNTiles = 8;      // n-tiles of C one warp accumulates at once (in registers)
constexpr int kMaxBatchTile = kMaxNTiles * kTileN;  // batch rows per pass: 64

FASTRNN_LAYOUT_HD constexpr int64_t align_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }
FASTRNN_LAYOUT_HD constexpr int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }

// The product's sizes for one block (see the header comment).
struct ProductShape {
  int64_t rows;     // M
  int64_t k;        // K
  int64_t ld;       // row stride of A and B, elements
  int64_t m_tiles;  // ceil(M / 16)
};

FASTRNN_LAYOUT_HD constexpr ProductShape product_shape(int gates, int64_t hidden, int64_t units, bool backward) {
  const int64_t rows = backward ? units : gates * units;
  const int64_t k = backward ? gates * hidden : hidden;
  return ProductShape{rows, k, align_up(k, kTileK) + 8, ceil_div(rows, kTileM)};
}

// Row stride of the partials: the batch tile rounded up to whole n-tiles.
FASTRNN_LAYOUT_HD constexpr int64_t partial_ld(int64_t batch_tile) { return align_up(batch_tile, kTileN); }

// Byte offsets of the three regions (16-byte aligned) and the total.
struct SmemLayout {
  int64_t b_offset;
  int64_t partial_offset;
  int64_t bytes;
};

FASTRNN_LAYOUT_HD constexpr SmemLayout smem_layout(int gates, int itemsize, int64_t hidden, int64_t units,
                                                   int batch_tile, bool backward) {
  const ProductShape s = product_shape(gates, hidden, units, backward);
  const int64_t a_bytes = align_up(s.rows * s.ld * itemsize, 16);
  const int64_t b_bytes = align_up(batch_tile * s.ld * itemsize, 16);
  const int64_t partial_bytes = static_cast<int64_t>(kWarps) * s.m_tiles * kTileM * partial_ld(batch_tile) * 4;
  return SmemLayout{a_bytes, a_bytes + b_bytes, a_bytes + b_bytes + partial_bytes};
}

FASTRNN_LAYOUT_HD constexpr int64_t smem_bytes(int gates, int itemsize, int64_t hidden, int64_t units, int batch_tile,
                                               bool backward) {
  return smem_layout(gates, itemsize, hidden, units, batch_tile, backward).bytes;
}

// A walk over the elements i = start, start + stride, ... of a row-major (rows x width) range,
// giving each element's column and its offset in a padded copy with row stride ld, with no
// division per step (two up front). The staging loops and the per-item loops of the persistent
// kernels use it: an integer division costs ~20 instructions (64-bit: a call of ~70), once per
// element and step before.
//   col:  i % width       row:  i / width       pad:  row * ld + col
// Each step adds stride = (stride / width) rows + (stride % width) columns; when the column
// passes width it wraps once (stride % width < width) into the next row: pad += ld - width.
// The compiler drops the fields a loop does not read.
struct FlatWalk {
  int col;   // i % width
  int row;   // i / width
  int pad;   // row * ld + col
  int dcol;  // stride % width
  int drow;  // stride / width
  int dpad;  // drow * ld + dcol
  int width;
  int wrap;  // ld - width

  FASTRNN_LAYOUT_HD FlatWalk(int start, int stride, int width_, int ld)
      : col(start % width_), row(start / width_), pad(start / width_ * ld + start % width_), dcol(stride % width_),
        drow(stride / width_), dpad(stride / width_ * ld + stride % width_), width(width_), wrap(ld - width_) {}

  FASTRNN_LAYOUT_HD void next() {
    col += dcol;
    row += drow;
    pad += dpad;
    if (col >= width) {
      col -= width;
      ++row;
      pad += wrap;
    }
  }
};

struct Plan {
  int blocks = 0;       // P; 0: does not fit
  int units = 0;        // U, hidden units per block
  int batch_tile = 0;   // BT
  int64_t smem = 0;     // dynamic shared memory bytes per block
};

// The plan for at most `max_blocks` blocks: as many blocks as that allows (at most one per hidden
// unit), so each holds the smallest slice; then the fewest passes over the batch the shared
// memory allows (the largest batch tile that fits `smem_per_block` bytes), and of the tiles that
// give that many passes the smallest (balanced: B=100 with room for 64 rows runs two passes of
// 50, not 64 + 36). Returns blocks == 0 when even BT = 1 does not fit.
inline Plan plan_for_blocks(int gates, int itemsize, int64_t hidden, int64_t batch, int max_blocks,
                            int64_t smem_per_block, bool backward) {
  Plan plan;
  if (hidden <= 0 || max_blocks <= 0) return plan;
  const int64_t blocks = hidden < max_blocks ? hidden : max_blocks;
  const int64_t units = ceil_div(hidden, blocks);
  const int64_t used_blocks = ceil_div(hidden, units);  // no block without units
  const int64_t max_tile = batch < kMaxBatchTile ? (batch > 0 ? batch : 1) : kMaxBatchTile;
  for (int64_t tile = max_tile; tile >= 1; --tile) {
    const int64_t bytes = smem_bytes(gates, itemsize, hidden, units, static_cast<int>(tile), backward);
    if (bytes <= smem_per_block) {
      const int64_t rows = batch > 0 ? batch : 1;
      const int64_t balanced = ceil_div(rows, ceil_div(rows, tile));  // <= tile: fits too
      plan.blocks = static_cast<int>(used_blocks);
      plan.units = static_cast<int>(units);
      plan.batch_tile = static_cast<int>(balanced);
      plan.smem = smem_bytes(gates, itemsize, hidden, units, static_cast<int>(balanced), backward);
      return plan;
    }
  }
  return plan;
}

// Blocks each direction prefers (units per block as a choice per direction). Every block reads
// all of the exchanged h (forward, B*H values) or dgates (backward, B*G*H) through L2 each
// step, so the L2 traffic of a step is blocks x that; fewer, wider blocks cut it at the cost of
// more product work per block. The cost model (bench/cuda_expectations.md) puts the target
// shape's optimum near 64 blocks of 12 units forward and 48 of 16 backward; the GPU check's
// block-count sweep (bench/kernel_timing.cu) measures it. fastrnn/cuda/capacity.py restates them.
constexpr int kPreferredBlocksForward = 64;
constexpr int kPreferredBlocksBackward = 48;

// The launch plan on a GPU with `num_sms` SMs: the direction's preferred block count where that
// keeps the batch in as few passes as the whole GPU would (so the largest hidden size and the
// one-pass steps are unchanged), else one block per SM (plan_for_blocks).
inline Plan make_plan(int gates, int itemsize, int64_t hidden, int64_t batch, int num_sms, int64_t smem_per_block,
                      bool backward) {
  const Plan wide = plan_for_blocks(gates, itemsize, hidden, batch, num_sms, smem_per_block, backward);
  const int preferred = backward ? kPreferredBlocksBackward : kPreferredBlocksForward;
  if (wide.blocks == 0 || preferred >= num_sms) return wide;
  const Plan narrow = plan_for_blocks(gates, itemsize, hidden, batch, preferred, smem_per_block, backward);
  const int64_t rows = batch > 0 ? batch : 1;
  const bool as_few_passes = narrow.blocks > 0 && ceil_div(rows, narrow.batch_tile) <= ceil_div(rows, wide.batch_tile);
  return as_few_passes ? narrow : wide;
}

}  // namespace fastrnn
