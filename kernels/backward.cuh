// Persistent backward kernel of one layer-direction: all T steps in reverse processing order in
// one cooperative launch. Mirrors forward.cuh (same work split, layout.cuh).
//
// Inputs: dout (T, B, H), dh_n / dc_n (B, H) gradients of the final state (dc_n: LSTM only),
// w_hh (G*H, H), saved (T, B, S*H) fp32 from the forward, lengths (B) int32.
// Outputs: dgx (T, B, G*H) gradient of the input projection gx; dghn (T, B, H) GRU only: the
// gradient of W_hn h + b_hn (= da_n * r; for the other gates and cells dgh = dgx);
// dh0, dc0 (B, H) gradients of the initial state.
// Work buffers: dgbuf (2, B, G*H, storage dtype) double buffer of dgh exchanged between blocks
// (rounded to the storage dtype, as the product does anyway: half the L2 traffic for 16-bit);
// dhbuf, dcbuf (B, H, fp32) the carried dh (partial) and dc of this block's units.
//
// Block p owns units [p*U, p*U + U); its shared memory holds W_hh[:, its units] transposed
// (U x G*H, the A of block_product.cuh) for all steps. Per step t, processed in the reverse of
// the forward's order:
//   A (local): for each (b, u) owned: dh = carried dh + dout[t] (if active); cell backward from
//      saved -> dgx[t], dghn[t], dgbuf[k%2]; carried dh = dh_direct, dc = dc_prev.
//      Inactive step: gradients zero, dh and dc pass through unchanged (state was frozen).
//   grid.sync()  (all of dgh_t visible); prefetch of the next step's saved and dout slices
//   B: for each tile of BT sequences: stage dgh_t in shared memory (from L2, in the storage
//      dtype); the block's product sum_r dgh_t[b, r] * W_hh[r, u] split over warps (tensor
//      cores for 16-bit); one thread per (sequence, unit) adds the warps' shares to dh[b, u].
// dgbuf is double-buffered, so one grid barrier per step suffices: step k+1's phase A writes
// the other half while slower blocks still read step k's half in phase B.
// dW_hh, dW_ih, dX and the biases are GEMMs over all steps on the host (fastrnn/cuda/autograd.py).
#pragma once

#include <cstdint>

#include "block_product.cuh"
#include "cell_math.cuh"
#include "dtype.cuh"
#include "layout.cuh"
#include "device.cuh"

namespace fastrnn {

template <typename T>
struct BackwardArgs {
  const T* dout;
  const T* dh_n;
  const T* dc_n;  // LSTM only
  const T* w_hh;
  const float* saved;
  const int32_t* lengths;
  T* dgx;
  T* dghn;  // GRU only
  T* dh0;
  T* dc0;  // LSTM only
  T* dgbuf;      // (2, B, G*H)
  float* dhbuf;  // (B, H)
  float* dcbuf;  // (B, H), LSTM only
  int64_t seq_len;
  int64_t batch;
  int64_t hidden;
  int units;
  int batch_tile;
  bool reverse;
  bool tf32;  // fp32 only: recurrent product on TF32 tensor cores (torch's matmul TF32 flag)
  uint32_t variant;  // 0; kVariant* flags (layout.cuh) only in bench/kernel_timing.cu
};

template <typename Cell, typename T>
__global__ void __launch_bounds__(kThreads, 1) persistent_backward_kernel(BackwardArgs<T> a) {
  namespace cg = cooperative_groups;
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  cg::grid_group grid = cg::this_grid();

  const int64_t H = a.hidden, B = a.batch, GH = G * a.hidden;
  const int TT = static_cast<int>(a.seq_len);  // 32-bit step counter, as in forward.cuh
  const int64_t U = a.units;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int64_t nu = (H - u0) < U ? (H - u0) : U;

  const ProductShape shape = product_shape(G, H, U, true);
  const SmemLayout layout = smem_layout(G, sizeof(T), H, U, a.batch_tile, true);
  unsigned char* smem = dynamic_smem();
  T* wt_s = reinterpret_cast<T*>(smem);                     // A: (U, ld), wt_s[ul*ld + r] = W_hh[r, u0 + ul]
  T* dg_s = reinterpret_cast<T*>(smem + layout.b_offset);   // B: (BT, ld)
  float* part_s = reinterpret_cast<float*>(smem + layout.partial_offset);
  const int64_t pld = partial_ld(a.batch_tile);

  for (int64_t i = threadIdx.x; i < U * GH; i += blockDim.x) {
    const int64_t r = i / U, ul = i % U;  // consecutive threads read consecutive columns
    wt_s[ul * shape.ld + r] = ul < nu ? a.w_hh[r * H + u0 + ul] : from_float<T>(0.f);  // zero rows past H
  }
  zero_pad_columns(wt_s, U, shape);
  zero_pad_columns(dg_s, a.batch_tile, shape);
  // Items (sequence b, unit u0 + ul), as in forward.cuh: with the whole batch in one tile and
  // at most one item per thread ("resident"), a thread keeps its item for all steps, in both
  // phases (the product's partial for (bl, ul) goes to the same thread): its carried dh, dc and
  // length stay in registers, and the next step's saved / dout values are loaded right after
  // the grid barrier, in flight during phase B. Otherwise FlatWalk over the items of a tile,
  // with dh, dc in dhbuf / dcbuf (only this block touches its units' entries).
  const int tid = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
  const int nui = static_cast<int>(nu), Hi = static_cast<int>(H);
  const bool resident = B <= a.batch_tile && B * nu <= threads;  // block-uniform
  const bool mine = resident && tid < B * nu;
  const int rbl = mine ? tid / nui : 0, rul = mine ? tid % nui : 0;
  float r_dh = 0.f, r_dc = 0.f, r_sv[S], r_dout = 0.f;
  int r_len = 0;

  // Phase-A inputs of item (b, u0 + ul) at step t: the S saved values and dout.
  auto load_inputs = [&](int t, int64_t b, int ul, float (&sv)[S], float& dout) {
    const int64_t row = static_cast<int64_t>(t) * B + b;  // 64-bit: T*B*S*H may pass 2^31
    const float* p = a.saved + row * (S * H) + u0 + ul;
#pragma unroll
    for (int s = 0; s < S; ++s) sv[s] = p[s * H];
    dout = to_float(a.dout[row * H + u0 + ul]);
  };
  // Phase A of item (b, u0 + ul) at step t: the cell backward from the saved values, writing
  // dgx, dghn and the exchanged dgh; dh, dc: the carried gradients, updated in place (they pass
  // through unchanged past the sequence's end, where the gate gradients are zero).
  T* dg = nullptr;
  auto phase_a = [&](int t, int64_t b, int ul, bool active, const float (&sv)[S], float dout, float& dh, float& dc) {
    const int64_t u = u0 + ul, row = static_cast<int64_t>(t) * B + b;
    T* dgx_row = a.dgx + row * GH;
    if (active) {
      float dgx[G], dgh[G], dh_direct, dc_prev;
      Cell::backward(sv, dh + dout, dc, dgx, dgh, dh_direct, dc_prev);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        dgx_row[g * H + u] = from_float<T>(dgx[g]);
        dg[b * GH + g * H + u] = from_float<T>(dgh[g]);
      }
      if (Cell::kGruRecurrentBias) a.dghn[row * H + u] = from_float<T>(dgh[G - 1]);
      dh = dh_direct;
      if (Cell::kHasCellState) dc = dc_prev;
    } else {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        dgx_row[g * H + u] = from_float<T>(0.f);
        dg[b * GH + g * H + u] = from_float<T>(0.f);
      }
      if (Cell::kGruRecurrentBias) a.dghn[row * H + u] = from_float<T>(0.f);
    }
  };

  if (resident) {
    if (mine) {
      const int64_t off = rbl * H + u0 + rul;
      r_dh = to_float(a.dh_n[off]);
      if (Cell::kHasCellState) r_dc = to_float(a.dc_n[off]);
      r_len = a.lengths[rbl];
      load_inputs(a.reverse ? 0 : TT - 1, rbl, rul, r_sv, r_dout);
    }
  } else {
    for (int64_t i = threadIdx.x; i < B * nu; i += blockDim.x) {
      const int64_t b = i / nu, u = u0 + i % nu;
      a.dhbuf[b * H + u] = to_float(a.dh_n[b * H + u]);
      if (Cell::kHasCellState) a.dcbuf[b * H + u] = to_float(a.dc_n[b * H + u]);
    }
  }
  __syncthreads();

  for (int k = 0; k < TT; ++k) {
    const int t = a.reverse ? k : TT - 1 - k;
    dg = a.dgbuf + (k & 1) * B * GH;
    // Phase A: gate gradients of this block's units.
    if (resident) {
      if (mine && (a.variant & kVariantNoPrefetch)) load_inputs(t, rbl, rul, r_sv, r_dout);  // timing: not early
      if (mine) phase_a(t, rbl, rul, t < r_len, r_sv, r_dout, r_dh, r_dc);
    } else {
      for (int64_t b0 = 0; b0 < B; b0 += a.batch_tile) {  // per tile: 32-bit offsets within it
        const int64_t nb = (B - b0) < a.batch_tile ? (B - b0) : a.batch_tile;
        FlatWalk w(tid, threads, nui, Hi);  // row = bl, col = ul, pad = bl * H + ul
        for (int item = tid; item < static_cast<int>(nb) * nui; item += threads, w.next()) {
          const int64_t b = b0 + w.row, off = b0 * H + u0 + w.pad;
          float sv[S], dout, dh = a.dhbuf[off], dc = Cell::kHasCellState ? a.dcbuf[off] : 0.f;
          const bool active = t < a.lengths[b];
          if (active) load_inputs(t, b, w.col, sv, dout);
          phase_a(t, b, w.col, active, sv, dout, dh, dc);
          a.dhbuf[off] = dh;
          if (Cell::kHasCellState) a.dcbuf[off] = dc;
        }
      }
    }
    grid.sync();  // dgh_t of every unit visible to every block
    if (k + 1 < TT) {
      const int t_next = a.reverse ? t + 1 : t - 1;
      if (mine && !(a.variant & kVariantNoPrefetch)) {
        load_inputs(t_next, rbl, rul, r_sv, r_dout);  // next step's phase A, in flight during phase B
      }
      if (!resident && !(a.variant & kVariantNoPrefetch)) {  // the same, into L2 only
        const int64_t tn = t_next;
        prefetch_rows_l2(a.saved + tn * B * S * H + u0, B * S, H * sizeof(float), nu * sizeof(float));
        prefetch_rows_l2(a.dout + tn * B * H + u0, B, H * sizeof(T), nu * sizeof(T));
      }
    }
    // Phase B: carried dh += dgh_t W_hh restricted to this block's units.
    for (int64_t b0 = 0; b0 < B; b0 += a.batch_tile) {
      const int64_t nb = (B - b0) < a.batch_tile ? (B - b0) : a.batch_tile;
      __syncthreads();  // the previous tile's readers are done with dg_s and part_s
      if (!(a.variant & kVariantSkipStaging)) stage_rows(dg_s, dg + b0 * GH, nb, shape);
      __syncthreads();
      if (!(a.variant & kVariantSkipProduct)) block_product(wt_s, dg_s, nb, shape, pld, part_s, a.tf32);
      __syncthreads();
      if (resident) {
        if (mine) r_dh += partial_sum(part_s, shape, pld, rul, rbl);
      } else {
        FlatWalk w(tid, threads, nui, Hi);  // row = bl, col = ul, pad = bl * H + ul
        for (int item = tid; item < static_cast<int>(nb) * nui; item += threads, w.next()) {
          a.dhbuf[b0 * H + u0 + w.pad] += partial_sum(part_s, shape, pld, w.col, w.row);
        }
      }
    }
    __syncthreads();  // phase A of the next step reads dhbuf written by other threads
  }
  if (resident) {
    if (mine) {
      const int64_t off = rbl * H + u0 + rul;
      a.dh0[off] = from_float<T>(r_dh);
      if (Cell::kHasCellState) a.dc0[off] = from_float<T>(r_dc);
    }
  } else {
    for (int64_t i = threadIdx.x; i < B * nu; i += blockDim.x) {
      const int64_t b = i / nu, u = u0 + i % nu;
      a.dh0[b * H + u] = from_float<T>(a.dhbuf[b * H + u]);
      if (Cell::kHasCellState) a.dc0[b * H + u] = from_float<T>(a.dcbuf[b * H + u]);
    }
  }
}

}  // namespace fastrnn
