// Persistent forward kernel of one layer-direction: all T steps in one cooperative launch.
//
// Inputs (row-major, contiguous; T = seq_len, B = batch, H = hidden, G = Cell::kGates):
//   gx      (T, B, G*H)  input projection W_ih x + b_ih + b_hh (the GRU's n block: + b_in only)
//   w_hh    (G*H, H)     recurrent weights, torch.nn row order
//   b_hn    (H)          GRU only: the n gate's recurrent bias (r multiplies W_hn h + b_hn)
//   h0, c0  (B, H)       initial state (c0: LSTM only)
//   lengths (B) int32    step t of sequence b is active when t < lengths[b]
// Outputs:
//   out     (T, B, H)    h_t, zero at inactive steps
//   h_n, c_n (B, H)      final state (frozen past a sequence's end)
//   saved   (T, B, S*H)  fp32, S = Cell::kSaved values per unit (cell_math.cuh), zero when inactive
// Work buffers: hx (2, B, H, storage dtype) double buffer of h exchanged between blocks; hstate
// and cbuf (B, H, fp32) the exact h and the LSTM cell state of each unit, read and written only
// by the block that owns the unit. h crosses between blocks in the storage dtype because the
// product rounds it to that dtype anyway: for bf16/fp16 this halves the L2 traffic of the
// exchange (every block reads all of h_{t-1} every step).
//
// Block p owns units [p*U, p*U + U) with all their gates (layout.cuh); its W_hh rows stay in
// shared memory for all T steps (A of block_product.cuh: row g*U + ul is W_hh row g*H + u0 + ul;
// rows of units past H are zero). Per step t (t = T-1..0 when reverse), per tile of BT sequences:
//   stage h_{t-1} from hx in shared memory (B): cp.async copies through L2, all in flight at once
//   (one tile per step: each warp stages the k-tiles it multiplies and starts on them, no block
//   barrier between staging and product);
//   the block's product gates_h = W_hh[rows] h_{t-1}, split over warps (tensor cores for 16-bit);
//   one thread per (sequence, unit) item: the cell update from the warps' partial sums, writing
//   out, saved and hx[next];
// then a prefetch of step t+1's gx slice into L2 and grid.sync() so every block sees the
// complete h_t. The items' state (exact h, c, length): in registers when the batch is one tile
// and its items fit one per thread ("resident", the target shape), else in hstate / cbuf.
// With bf16/fp16, h_{t-1} enters the product rounded to the storage dtype (as in cuDNN); the
// state itself (hstate, cbuf, the cell update) stays fp32.
#pragma once

#include <cstdint>

#include "block_product.cuh"
#include "cell_math.cuh"
#include "dtype.cuh"
#include "layout.cuh"
#include "device.cuh"

namespace fastrnn {

template <typename T>
struct ForwardArgs {
  const T* gx;
  const T* w_hh;
  const T* b_hn;  // GRU only (else may be null)
  const T* h0;
  const T* c0;  // LSTM only (else may be null)
  const int32_t* lengths;
  T* out;
  T* h_n;
  T* c_n;  // LSTM only
  float* saved;
  T* hx;          // (2, B, H)
  float* hstate;  // (B, H)
  float* cbuf;    // (B, H), LSTM only
  int64_t seq_len;
  int64_t batch;
  int64_t hidden;
  int units;       // U
  int batch_tile;  // BT
  bool reverse;
  bool tf32;  // fp32 only: recurrent product on TF32 tensor cores (torch's matmul TF32 flag)
  uint32_t variant;  // 0; kVariant* flags (layout.cuh) only in bench/kernel_timing.cu
};

template <typename Cell, typename T>
__global__ void __launch_bounds__(kThreads, 1) persistent_forward_kernel(ForwardArgs<T> a) {
  namespace cg = cooperative_groups;
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  cg::grid_group grid = cg::this_grid();

  const int64_t H = a.hidden, B = a.batch;
  // 32-bit step counter (the host rejects seq_len >= 2^31): a 64-bit one does not fit the
  // register budget next to the product's accumulators and was reloaded from local memory after
  // every barrier. Offsets that scale with t stay 64-bit (row below).
  const int TT = static_cast<int>(a.seq_len);
  const int64_t U = a.units;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int64_t nu = (H - u0) < U ? (H - u0) : U;  // units of this block (>= 1 by the plan)

  const ProductShape shape = product_shape(G, H, U, false);
  const SmemLayout layout = smem_layout(G, sizeof(T), H, U, a.batch_tile, false);
  unsigned char* smem = dynamic_smem();
  T* w_s = reinterpret_cast<T*>(smem);                          // A: (G*U, ld)
  T* h_s = reinterpret_cast<T*>(smem + layout.b_offset);        // B: (BT, ld)
  float* part_s = reinterpret_cast<float*>(smem + layout.partial_offset);
  const int64_t pld = partial_ld(a.batch_tile);

  // Resident weights for all steps (zero rows for units past H, zero pad columns).
  for (int64_t i = threadIdx.x; i < G * U * shape.ld; i += blockDim.x) {
    const int64_t row = i / shape.ld, k = i % shape.ld;
    const int64_t g = row / U, ul = row % U;
    w_s[i] = (ul < nu && k < H) ? a.w_hh[(g * H + u0 + ul) * H + k] : from_float<T>(0.f);
  }
  zero_pad_columns(h_s, a.batch_tile, shape);

  // Items: (sequence b, unit u0 + ul), one thread each per step. When the whole batch is one
  // tile and its items fit one per thread (the target shape: 16 x 12 = 192 items), every thread
  // keeps the same item for all steps ("resident"): its h, c and length stay in registers and
  // its gx loads are issued at the start of the step, so they are in flight during the staging
  // and the product (they hit L2: the prefetch before the previous barrier brought them there).
  // Not before the barrier: grid.sync()'s fence in thread 0 would wait for thread 0's loads.
  // Otherwise the items are walked per tile (FlatWalk: no division per item) and the state lives
  // in hstate / cbuf, which only this block touches.
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
  const int nui = static_cast<int>(nu), Hi = static_cast<int>(H);
  const bool resident = B <= a.batch_tile && B * nu <= threads;  // block-uniform
  const bool mine = resident && tid < B * nu;
  const int rbl = mine ? tid / nui : 0, rul = mine ? tid % nui : 0;  // the resident item
  float r_h = 0.f, r_c = 0.f;
  int r_len = 0;
  // Warp-local staging (block_product.cuh stage_own_k_tiles) when the batch is one tile and h
  // can be copied in 16-byte vectors: both halves of hx qualify or neither (B*H*itemsize is a
  // multiple of 16 when H is a multiple of the vector). Block-uniform.
  const bool own_tiles = resident && !(a.variant & kVariantBlockStaging) && can_stage_vectors(a.hx, shape) &&
                         can_stage_vectors(a.hx + B * H, shape);

  // gx of item (b, u0 + ul) at step t: G values, H apart.
  auto load_gx = [&](int t, int64_t b, int ul, float (&gx)[G]) {
    const T* p = a.gx + (static_cast<int64_t>(t) * B + b) * (G * H) + u0 + ul;  // 64-bit: T*B*G*H may pass 2^31
#pragma unroll
    for (int g = 0; g < G; ++g) gx[g] = to_float(p[g * H]);
  };
  // Step t of item (bl, ul) of the tile at b0: the gates from gx and the block's product, the
  // cell update, and the writes of out, saved and h_next. hp, cp: the item's state, updated in
  // place (unchanged past the sequence's end, where out and saved are zero).
  auto update = [&](int t, int64_t b0, int bl, int ul, bool active, const float (&gx)[G], T* h_next, float& hp,
                    float& cp) {
    const int64_t b = b0 + bl, u = u0 + ul;
    const int64_t row = static_cast<int64_t>(t) * B + b;
    float* sv = a.saved + row * (S * H) + u;
    if (active) {
      float gh[G], sv_v[S];
#pragma unroll
      for (int g = 0; g < G; ++g) gh[g] = partial_sum(part_s, shape, pld, g * U + ul, bl);
      if (Cell::kGruRecurrentBias) gh[G - 1] += to_float(a.b_hn[u]);
      float hn, cn;
      Cell::forward(gx, gh, hp, cp, sv_v, hn, cn);
      a.out[row * H + u] = from_float<T>(hn);
#pragma unroll
      for (int s = 0; s < S; ++s) sv[s * H] = sv_v[s];
      hp = hn;
      if (Cell::kHasCellState) cp = cn;
    } else {
      a.out[row * H + u] = from_float<T>(0.f);
#pragma unroll
      for (int s = 0; s < S; ++s) sv[s * H] = 0.f;
    }
    h_next[b * H + u] = from_float<T>(hp);
  };

  // Initial state of this block's units.
  for (int64_t i = threadIdx.x; i < B * nu; i += blockDim.x) {
    const int64_t b = i / nu, u = u0 + i % nu;
    a.hx[b * H + u] = a.h0[b * H + u];
    if (!resident) {
      a.hstate[b * H + u] = to_float(a.h0[b * H + u]);
      if (Cell::kHasCellState) a.cbuf[b * H + u] = to_float(a.c0[b * H + u]);
    }
  }
  if (mine) {
    const int64_t off = rbl * H + u0 + rul;
    r_h = to_float(a.h0[off]);
    if (Cell::kHasCellState) r_c = to_float(a.c0[off]);
    r_len = a.lengths[rbl];
  }
  // The next step's gx prefetch (before each grid.sync below): rows b*G + g of nu units each,
  // the same pattern every step at a base that moves by B*G*H elements; where that is a whole
  // number of 32-byte sectors and the hints fit one per thread (the target shape: 64 rows x 2
  // sectors on 256 threads), each thread's hint offset is computed once here.
  const int64_t pf_sectors = (nu * static_cast<int64_t>(sizeof(T)) + 31) / 32 + 1;
  const bool pf_once = (B * G * H * static_cast<int64_t>(sizeof(T))) % 32 == 0 && B * G * pf_sectors <= threads;
  const int64_t pf_off = pf_once ? prefetch_offset_l2(a.gx + u0, B * G, H * sizeof(T), nu * sizeof(T)) : kNoPrefetch;
  grid.sync();

  for (int k = 0; k < TT; ++k) {
    const int t = a.reverse ? TT - 1 - k : k;
    const T* h_prev = a.hx + (k & 1) * B * H;
    T* h_next = a.hx + ((k + 1) & 1) * B * H;
    float r_gx[G];
    if (mine) load_gx(t, rbl, rul, r_gx);  // consumed after the product
    for (int64_t b0 = 0; b0 < B; b0 += a.batch_tile) {
      const int64_t nb = (B - b0) < a.batch_tile ? (B - b0) : a.batch_tile;
      if (own_tiles) {
        // One tile per step: the last readers of h_s and part_s were the previous step's, before
        // grid.sync() (a block barrier too), and each warp reads only the k-tiles it stages.
        if (!(a.variant & kVariantSkipStaging)) stage_own_k_tiles(h_s, h_prev, nb, shape);
      } else {
        __syncthreads();  // the previous tile's readers are done with h_s and part_s
        if (!(a.variant & kVariantSkipStaging)) stage_rows(h_s, h_prev + b0 * H, nb, shape);
        __syncthreads();
      }
      if (!(a.variant & kVariantSkipProduct)) block_product(w_s, h_s, nb, shape, pld, part_s, a.tf32);
      __syncthreads();
      if (resident) {
        if (mine) update(t, 0, rbl, rul, t < r_len, r_gx, h_next, r_h, r_c);
      } else {
        FlatWalk w(tid, threads, nui, Hi);  // row = bl, col = ul, pad = bl * H + ul
        for (int item = tid; item < static_cast<int>(nb) * nui; item += threads, w.next()) {
          const int64_t off = b0 * H + u0 + w.pad;
          float gx[G];
          load_gx(t, b0 + w.row, w.col, gx);
          float hp = a.hstate[off], cp = Cell::kHasCellState ? a.cbuf[off] : 0.f;
          update(t, b0, w.row, w.col, t < a.lengths[b0 + w.row], gx, h_next, hp, cp);
          a.hstate[off] = hp;
          if (Cell::kHasCellState) a.cbuf[off] = cp;
        }
      }
    }
    // After the last step no block reads hx again (the final state below is this block's own),
    // so the last step needs only a block barrier, not a grid barrier.
    if (k + 1 < TT) {
      // Next step's gx of this block's units (HBM latency hidden behind the barrier).
      const int64_t t_next = a.reverse ? t - 1 : t + 1;  // 64-bit: scales an offset
      if (!(a.variant & kVariantNoPrefetch)) {
        const T* next = a.gx + t_next * B * G * H + u0;
        if (pf_once) {
          if (pf_off != kNoPrefetch) prefetch_l2(reinterpret_cast<const char*>(next) + pf_off);
        } else {
          prefetch_rows_l2(next, B * G, H * sizeof(T), nu * sizeof(T));
        }
      }
      grid.sync();  // h_t complete in every block before anyone reads it
    }
  }
  __syncthreads();  // the loop below reads hstate / cbuf that other threads of the block wrote
  // Final state of this block's units.
  if (resident) {
    if (mine) {
      const int64_t off = rbl * H + u0 + rul;
      a.h_n[off] = from_float<T>(r_h);
      if (Cell::kHasCellState) a.c_n[off] = from_float<T>(r_c);
    }
  } else {
    for (int64_t i = threadIdx.x; i < B * nu; i += blockDim.x) {
      const int64_t b = i / nu, u = u0 + i % nu;
      a.h_n[b * H + u] = from_float<T>(a.hstate[b * H + u]);
      if (Cell::kHasCellState) a.c_n[b * H + u] = from_float<T>(a.cbuf[b * H + u]);
    }
  }
}

}  // namespace fastrnn
