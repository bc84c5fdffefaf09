// The fused recurrence of one layer-direction on the CPU, forward and backward, for one
// instruction set: isa_<name>.cpp sets FASTRNN_ISA (a namespace), FASTRNN_VEC_BYTES and
// FASTRNN_ACCUMULATORS, and the compiler's target, then includes this file.
//
// Forward, for a tile of MB batch rows, every step t (in processing order):
//   gh = h_{t-1} W_hh^T: the packed W_hh^T (kernel_args.h) is read panel after panel; NP panels
//   at a time, the MB x NP x G output vectors live in registers through the whole k loop (one
//   broadcast of h per row and k, one load per weight vector), then the cell update runs on them
//   in registers (pointwise_<cell>.h) and h_t goes to a second state buffer (every panel reads
//   all of h_{t-1}).
// Backward, same tile, steps in reverse processing order:
//   dh_t = dout_t + carried dh; the cell's backward gives dgx_t (and what passes directly to
//   dh_{t-1}); then dh_{t-1} += dgh_t W_hh, the same register-tiled product over the packed W_hh.
// Weight gradients and dx are GEMMs over all steps, outside (fastrnn/fused.py).
//
// Every output element is a sum over k in increasing order in one accumulator, whatever MB and
// NP: the results of a row do not depend on how the batch was split into tiles and threads.
// Lengths (design.md section 4): a row with t >= lengths[b] keeps its state, outputs zero and
// gets zero gradients at t.
#pragma once

#include <sched.h>

#include "cells.h"
#include "kernel_args.h"

namespace fastrnn_cpu {
namespace FASTRNN_ISA {

#include "vec.h"
#include "activations.h"
#include "pointwise_elman.h"
#include "pointwise_lstm.h"
#include "pointwise_gru.h"

constexpr int MAX_ROWS = 8;  // batch rows per tile

// Rows per forward tile: as many as fit the register budget with one panel of G gates, so a
// weight vector loaded once serves MB rows (at B >= 8 the weights are read from cache half as
// often as with 4 rows; the broadcasts of h come from L1).
template <class Cell>
constexpr int forward_rows() {
  return FASTRNN_ACCUMULATORS / Cell::G >= MAX_ROWS ? MAX_ROWS : FASTRNN_ACCUMULATORS / Cell::G;
}

// Panels per pass: as many as keep MB x NP x G accumulators within the register budget.
constexpr int panels_per_pass(int accumulators_per_panel) {
  return FASTRNN_ACCUMULATORS / accumulators_per_panel >= 8   ? 8
         : FASTRNN_ACCUMULATORS / accumulators_per_panel >= 1 ? FASTRNN_ACCUMULATORS / accumulators_per_panel
                                                              : 1;
}

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

template <int MB, int NP, int G>
static inline void zero(vf (&acc)[MB][NP][G]) {
  for (int r = 0; r < MB; ++r)
    for (int j = 0; j < NP; ++j)
      for (int g = 0; g < G; ++g) acc[r][j][g] = splat(0.0f);
}

// acc[r][j][g] += sum_{k in [k_begin, k_end)} a[r * lda + k] * panel_j[k][g],
// panel_j = panels + j * panel_stride, each panel's row k holding G vectors.
template <int MB, int NP, int G>
static inline void product(const float* a, long lda, int k_begin, int k_end, const float* panels,
                           long panel_stride, vf (&acc)[MB][NP][G]) {
  for (int k = k_begin; k < k_end; ++k) {
    vf w[NP][G];
    for (int j = 0; j < NP; ++j)
      for (int g = 0; g < G; ++g) w[j][g] = load(panels + j * panel_stride + (long)k * G * W + g * W);
    for (int r = 0; r < MB; ++r) {
      vf x = splat(a[r * lda + k]);
      for (int j = 0; j < NP; ++j)
        for (int g = 0; g < G; ++g) acc[r][j][g] += x * w[j][g];
    }
  }
}

// ------------------------------------------------------------------------------------ forward

struct ForwardStep {
  const float* gx;  // rows of this tile at step t
  float* out;
  float* saved;  // null: not saved
  const float* h;  // (MB, Hp) h_{t-1}
  float* h_next;   // (MB, Hp) h_t
  float* c;        // (MB, Hp) LSTM: c_{t-1}, updated in place to c_t
  bool active[MAX_ROWS];
};

// The cell update of panels [p0, p0 + NP) from their finished recurrent products acc.
template <class Cell, int MB, int NP>
static inline void forward_update(const ForwardArgs& a, const ForwardStep& st, int p0, vf (&acc)[MB][NP][Cell::G]) {
  constexpr int G = Cell::G, S = Cell::S;
  const int H = a.H, Hp = ((H + W - 1) / W) * W;
  for (int j = 0; j < NP; ++j) {
    const int u0 = (p0 + j) * W, n = imin(W, H - u0);
    for (int r = 0; r < MB; ++r) {
      float* out = st.out + (long)r * H + u0;
      if (!st.active[r]) {
        store(st.h_next + r * Hp + u0, load(st.h + r * Hp + u0));
        zero_n(out, n);
        continue;
      }
      vf gx[G];
      for (int g = 0; g < G; ++g) gx[g] = load_n(st.gx + (long)r * G * H + g * H + u0, n);
      if (Cell::gru && a.b_hn) acc[r][j][2] += load_n(a.b_hn + u0, n);
      vf c = Cell::has_c ? load(st.c + r * Hp + u0) : splat(0.0f);
      vf saved[S > 0 ? S : 1];
      vf h = Cell::forward(gx, acc[r][j], load(st.h + r * Hp + u0), c, saved);
      store(st.h_next + r * Hp + u0, h);
      store_n(out, h, n);
      if (Cell::has_c) store(st.c + r * Hp + u0, c);
      if (st.saved)
        for (int s = 0; s < S; ++s) store_n(st.saved + (long)r * S * H + s * H + u0, saved[s], n);
    }
  }
}

template <class Cell, int MB, int NP>
static inline void forward_panels(const ForwardArgs& a, const ForwardStep& st, int p0) {
  constexpr int G = Cell::G;
  const int H = a.H, Hp = ((H + W - 1) / W) * W;
  const long panel_stride = (long)H * G * W;
  vf acc[MB][NP][G];
  zero(acc);
  product<MB, NP, G>(st.h, Hp, 0, H, a.packed + p0 * panel_stride, panel_stride, acc);
  forward_update<Cell, MB, NP>(a, st, p0, acc);
}

template <class Cell, int MB>
static void forward_tile(const ForwardArgs& a, int b0, float* ws) {
  constexpr int G = Cell::G, S = Cell::S, NP = panels_per_pass(MB * G);
  const int H = a.H, T = a.T, B = a.B, P = (H + W - 1) / W, Hp = P * W;
  float* h = ws;
  float* h_next = ws + MB * Hp;
  float* c = ws + 2 * MB * Hp;
  int len[MB];
  for (int r = 0; r < MB; ++r) {
    const int b = b0 + r;
    len[r] = a.lengths[b];
    copy_n(h + r * Hp, a.h0 + (long)b * H, H);
    if (Cell::has_c) copy_n(c + r * Hp, a.c0 + (long)b * H, H);
  }
  ForwardStep st;
  for (int s = 0; s < T; ++s) {
    const int t = a.reverse ? T - 1 - s : s;
    const long row = (long)t * B + b0;
    bool any = false;
    for (int r = 0; r < MB; ++r) any |= (st.active[r] = t < len[r]);
    st.out = a.out + row * H;
    if (!any) {  // the whole tile is past its lengths: states stay, outputs are zero
      zero_n(st.out, MB * H);
      continue;
    }
    st.gx = a.gx + row * G * H;
    st.saved = a.saved ? a.saved + row * S * H : nullptr;
    st.h = h, st.h_next = h_next, st.c = c;
    int p = 0;
    for (; p + NP <= P; p += NP) forward_panels<Cell, MB, NP>(a, st, p);
    for (; p < P; ++p) forward_panels<Cell, MB, 1>(a, st, p);
    float* swap = h;
    h = h_next, h_next = swap;
  }
  for (int r = 0; r < MB; ++r) {
    copy_n(a.h_n + (long)(b0 + r) * H, h + r * Hp, H);
    if (Cell::has_c) copy_n(a.c_n + (long)(b0 + r) * H, c + r * Hp, H);
  }
}


// A chunk of several tiles: per step, the product runs panel group by panel group and, within a
// group, block by block of K (KB rows of the packed weights, about 32 KB: they stay in L1) over
// every tile of the chunk, the tiles' partial sums kept in memory between blocks. So the weights
// are read from L2 / L3 once per step for the whole chunk, not once per tile. The sums run over
// k in the same order (a partial sum is stored and reloaded exactly): same bits as forward_tile.
struct Chunk {
  int b_begin, rows;
  float *h, *h_next, *c, *partial;  // (rows, Hp) x 3; partial: (rows, NP * G * W)
};

template <class Cell, int MB, int NP>
static inline void forward_block(const ForwardArgs& a, const Chunk& ch, int t, int row0, int p0, int k0, int k1) {
  constexpr int G = Cell::G, S = Cell::S;
  const int H = a.H, Hp = ((H + W - 1) / W) * W;
  const long panel_stride = (long)H * G * W, row = (long)t * a.B + ch.b_begin + row0;
  float* partial = ch.partial + (long)row0 * NP * G * W;
  ForwardStep st;
  st.h = ch.h + (long)row0 * Hp;
  vf acc[MB][NP][G];
  if (k0 == 0) {
    zero(acc);
  } else {
    for (int r = 0; r < MB; ++r)
      for (int j = 0; j < NP; ++j)
        for (int g = 0; g < G; ++g) acc[r][j][g] = load(partial + ((r * NP + j) * G + g) * W);
  }
  product<MB, NP, G>(st.h, Hp, k0, k1, a.packed + p0 * panel_stride, panel_stride, acc);
  if (k1 < H) {
    for (int r = 0; r < MB; ++r)
      for (int j = 0; j < NP; ++j)
        for (int g = 0; g < G; ++g) store(partial + ((r * NP + j) * G + g) * W, acc[r][j][g]);
    return;
  }
  for (int r = 0; r < MB; ++r) st.active[r] = t < a.lengths[ch.b_begin + row0 + r];
  st.gx = a.gx + row * G * H;
  st.out = a.out + row * H;
  st.saved = a.saved ? a.saved + row * S * H : nullptr;
  st.h_next = ch.h_next + (long)row0 * Hp;
  st.c = ch.c + (long)row0 * Hp;
  forward_update<Cell, MB, NP>(a, st, p0, acc);
}

template <class Cell, int NP>
static void forward_group(const ForwardArgs& a, const Chunk& ch, int t, int p0, int kb) {
  constexpr int R = forward_rows<Cell>();
  for (int k0 = 0; k0 < a.H; k0 += kb) {
    const int k1 = imin(a.H, k0 + kb);
    int r0 = 0;
    for (; r0 + R <= ch.rows; r0 += R) forward_block<Cell, R, NP>(a, ch, t, r0, p0, k0, k1);
    switch (ch.rows - r0) {
      case 7: if constexpr (R > 7) forward_block<Cell, 7, NP>(a, ch, t, r0, p0, k0, k1); break;
      case 6: if constexpr (R > 6) forward_block<Cell, 6, NP>(a, ch, t, r0, p0, k0, k1); break;
      case 5: if constexpr (R > 5) forward_block<Cell, 5, NP>(a, ch, t, r0, p0, k0, k1); break;
      case 4: if constexpr (R > 4) forward_block<Cell, 4, NP>(a, ch, t, r0, p0, k0, k1); break;
      case 3: if constexpr (R > 3) forward_block<Cell, 3, NP>(a, ch, t, r0, p0, k0, k1); break;
      case 2: if constexpr (R > 2) forward_block<Cell, 2, NP>(a, ch, t, r0, p0, k0, k1); break;
      case 1: if constexpr (R > 1) forward_block<Cell, 1, NP>(a, ch, t, r0, p0, k0, k1); break;
      default: break;
    }
  }
}

template <class Cell>
static void forward_chunk(const ForwardArgs& a, int b_begin, int b_end, float* ws) {
  constexpr int G = Cell::G, NP = panels_per_pass(forward_rows<Cell>() * G);
  const int H = a.H, T = a.T, B = a.B, P = (H + W - 1) / W, Hp = P * W, rows = b_end - b_begin;
  const int kb = imax(16, 8192 / (NP * G * W));  // 8192 floats: 32 KB of weights per block
  Chunk ch;
  ch.b_begin = b_begin, ch.rows = rows;
  ch.h = ws, ch.h_next = ws + (long)rows * Hp, ch.c = ws + 2L * rows * Hp, ch.partial = ws + 3L * rows * Hp;
  for (int r = 0; r < rows; ++r) {
    copy_n(ch.h + (long)r * Hp, a.h0 + (long)(b_begin + r) * H, H);
    if (Cell::has_c) copy_n(ch.c + (long)r * Hp, a.c0 + (long)(b_begin + r) * H, H);
  }
  for (int s = 0; s < T; ++s) {
    const int t = a.reverse ? T - 1 - s : s;
    bool any = false;
    for (int r = 0; r < rows && !any; ++r) any = t < a.lengths[b_begin + r];
    if (!any) {
      zero_n(a.out + ((long)t * B + b_begin) * H, rows * H);
      continue;
    }
    int p = 0;
    for (; p + NP <= P; p += NP) forward_group<Cell, NP>(a, ch, t, p, kb);
    for (; p < P; ++p) forward_group<Cell, 1>(a, ch, t, p, kb);
    float* swap = ch.h;
    ch.h = ch.h_next, ch.h_next = swap;
  }
  for (int r = 0; r < rows; ++r) {
    copy_n(a.h_n + (long)(b_begin + r) * H, ch.h + (long)r * Hp, H);
    if (Cell::has_c) copy_n(a.c_n + (long)(b_begin + r) * H, ch.c + (long)r * Hp, H);
  }
}

// ------------------------------------------------------------------------------------ backward

template <int MB, int NP>
static inline void backward_panels(const BackwardArgs& a, const float* dg, float* dh, int p0) {
  const int H = a.H, Hp = ((H + W - 1) / W) * W, K = num_gates(a.cell) * H;
  const long panel_stride = (long)K * W;
  vf acc[MB][NP][1];
  zero(acc);
  product<MB, NP, 1>(dg, K, 0, K, a.packed + p0 * panel_stride, panel_stride, acc);
  for (int j = 0; j < NP; ++j)
    for (int r = 0; r < MB; ++r) {
      float* d = dh + r * Hp + (p0 + j) * W;
      store(d, load(d) + acc[r][j][0]);
    }
}

// The cell's backward for row r of the tile at step t: dgx, dghn and dg (the gradient of gh, the
// left operand of the product with W_hh) for units [u_begin, u_end) (u_begin a multiple of W);
// dh (in place) becomes what passes directly to dh_{t-1}, dc becomes dc_{t-1}.
template <class Cell>
static inline void backward_row(const BackwardArgs& a, int t, int b, int len, float* dh, float* dc, float* dg,
                                int u_begin, int u_end) {
  constexpr int G = Cell::G, S = Cell::S;
  const int H = a.H, B = a.B;
  const long row = (long)t * B + b;
  // The state before step t: the previous active step's, or the initial state.
  const bool first = a.reverse ? t + 1 >= len : t == 0;
  const long prev = a.reverse ? row + B : row - B;
  const float* h_prev = first ? a.h0 + (long)b * H : a.out + prev * H;
  const float* c_prev = first ? (Cell::has_c ? a.c0 + (long)b * H : nullptr) : a.saved + prev * S * H + 4 * H;
  const float* saved = a.saved + row * S * H;
  for (int u0 = u_begin; u0 < u_end; u0 += W) {
    const int n = imin(W, u_end - u0);
    vf dhv = load(dh + u0) + load_n(a.dout + row * H + u0, n);
    vf dcv = Cell::has_c ? load(dc + u0) : splat(0.0f);
    vf sv[S > 0 ? S : 1];
    for (int s = 0; s < S; ++s) sv[s] = load_n(saved + s * H + u0, n);
    vf h_new = Cell::needs_out ? load_n(a.out + row * H + u0, n) : splat(0.0f);
    vf hp = Cell::needs_hprev ? load_n(h_prev + u0, n) : splat(0.0f);
    vf cp = Cell::has_c ? load_n(c_prev + u0, n) : splat(0.0f);
    vf dgx[G], dghn = splat(0.0f), direct;
    Cell::backward(dhv, dcv, sv, h_new, hp, cp, dgx, dghn, direct);
    for (int g = 0; g < G; ++g) {
      store_n(a.dgx + row * G * H + g * H + u0, dgx[g], n);
      store_n(dg + g * H + u0, (Cell::gru && g == 2) ? dghn : dgx[g], n);
    }
    if (Cell::gru) store_n(a.dghn + row * H + u0, dghn, n);
    store(dh + u0, direct);
    if (Cell::has_c) store(dc + u0, dcv);
  }
}

template <class Cell, int MB>
static void backward_tile(const BackwardArgs& a, int b0, float* ws) {
  constexpr int G = Cell::G, NP = panels_per_pass(MB);
  const int H = a.H, T = a.T, B = a.B, P = (H + W - 1) / W, Hp = P * W;
  float* dh = ws;
  float* dc = ws + MB * Hp;
  float* dg = ws + 2 * MB * Hp;  // (MB, G*H)
  int len[MB];
  for (int r = 0; r < MB; ++r) {
    const int b = b0 + r;
    len[r] = a.lengths[b];
    copy_n(dh + r * Hp, a.dh_n + (long)b * H, H);
    if (Cell::has_c) copy_n(dc + r * Hp, a.dc_n + (long)b * H, H);
  }
  for (int s = 0; s < T; ++s) {
    const int t = a.reverse ? s : T - 1 - s;
    const long row = (long)t * B + b0;
    bool any = false;
    for (int r = 0; r < MB; ++r) {
      if (t < len[r]) {
        any = true;
        backward_row<Cell>(a, t, b0 + r, len[r], dh + r * Hp, dc + r * Hp, dg + r * G * H, 0, H);
      } else {  // inactive: zero gradients at t; dh and dc pass through unchanged
        zero_n(a.dgx + (row + r) * G * H, G * H);
        if (Cell::gru) zero_n(a.dghn + (row + r) * H, H);
        zero_n(dg + r * G * H, G * H);
      }
    }
    if (!any) continue;
    int p = 0;
    for (; p + NP <= P; p += NP) backward_panels<MB, NP>(a, dg, dh, p);
    for (; p < P; ++p) backward_panels<MB, 1>(a, dg, dh, p);
  }
  for (int r = 0; r < MB; ++r) {
    copy_n(a.dh0 + (long)(b0 + r) * H, dh + r * Hp, H);
    if (Cell::has_c) copy_n(a.dc0 + (long)(b0 + r) * H, dc + r * Hp, H);
  }
}


// ------------------------------------------------------------------------------------ teams
//
// Small batches (all rows in one tile) on several threads: each of n threads owns a contiguous
// range of panels (hidden units) for all T steps, so its share of the packed weights stays in
// its own core's cache, and the threads meet at one barrier per step:
//   forward:  product and cell update of its units from the shared h_{t-1}, writes its units of
//             h_t (double-buffered); barrier.
//   backward: cell backward of its units (dg, double-buffered); barrier; its units of
//             dh_{t-1} += dg W_hh. (dh_{t-1} of a unit is read only by its owner.)
// Each unit is computed exactly as by one thread (same k order): the same bits for any n.

// Sense-reversing barrier on bar[0] (arrivals) and bar[16] (sense; another cache line).
static inline void team_barrier(int* bar, int n, int& sense) {
  sense ^= 1;
  if (__atomic_add_fetch(&bar[0], 1, __ATOMIC_ACQ_REL) == n) {
    __atomic_store_n(&bar[0], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&bar[16], sense, __ATOMIC_RELEASE);
    return;
  }
  for (int spins = 0; __atomic_load_n(&bar[16], __ATOMIC_ACQUIRE) != sense; ++spins) {
    if (spins > 2000) sched_yield();  // a shared machine may have descheduled a team member
#if defined(__x86_64__) || defined(__i386__)
    else __builtin_ia32_pause();
#endif
  }
}

template <class Cell, int MB>
static void forward_team_tile(const ForwardArgs& a, int tid, int n, float* ws, int* bar) {
  constexpr int G = Cell::G, S = Cell::S, NP = panels_per_pass(MB * G);
  const int H = a.H, T = a.T, B = a.B, P = (H + W - 1) / W, Hp = P * W;
  const int p_lo = (int)((long)P * tid / n), p_hi = (int)((long)P * (tid + 1) / n);
  const int u_lo = p_lo * W, u_hi = imin(H, p_hi * W), nu = u_hi > u_lo ? u_hi - u_lo : 0;
  float* h = ws;
  float* h_next = ws + MB * Hp;
  float* c = ws + 2 * MB * Hp;
  int len[MB], sense = 0;
  for (int r = 0; r < MB; ++r) {
    len[r] = a.lengths[r];
    copy_n(h + r * Hp + u_lo, a.h0 + (long)r * H + u_lo, nu);
    if (Cell::has_c) copy_n(c + r * Hp + u_lo, a.c0 + (long)r * H + u_lo, nu);
  }
  team_barrier(bar, n, sense);
  ForwardStep st;
  for (int s = 0; s < T; ++s) {
    const int t = a.reverse ? T - 1 - s : s;
    const long row = (long)t * B;
    bool any = false;
    for (int r = 0; r < MB; ++r) any |= (st.active[r] = t < len[r]);
    st.out = a.out + row * H;
    if (!any) {
      for (int r = 0; r < MB; ++r) zero_n(st.out + (long)r * H + u_lo, nu);
      continue;
    }
    st.gx = a.gx + row * G * H;
    st.saved = a.saved ? a.saved + row * S * H : nullptr;
    st.h = h, st.h_next = h_next, st.c = c;
    int p = p_lo;
    for (; p + NP <= p_hi; p += NP) forward_panels<Cell, MB, NP>(a, st, p);
    for (; p < p_hi; ++p) forward_panels<Cell, MB, 1>(a, st, p);
    team_barrier(bar, n, sense);
    float* swap = h;
    h = h_next, h_next = swap;
  }
  for (int r = 0; r < MB; ++r) {
    copy_n(a.h_n + (long)r * H + u_lo, h + r * Hp + u_lo, nu);
    if (Cell::has_c) copy_n(a.c_n + (long)r * H + u_lo, c + r * Hp + u_lo, nu);
  }
}

template <class Cell, int MB>
static void backward_team_tile(const BackwardArgs& a, int tid, int n, float* ws, int* bar) {
  constexpr int G = Cell::G, NP = panels_per_pass(MB);
  const int H = a.H, T = a.T, B = a.B, P = (H + W - 1) / W, Hp = P * W;
  const int p_lo = (int)((long)P * tid / n), p_hi = (int)((long)P * (tid + 1) / n);
  const int u_lo = p_lo * W, u_hi = imin(H, p_hi * W), nu = u_hi > u_lo ? u_hi - u_lo : 0;
  float* dh = ws;
  float* dc = ws + MB * Hp;
  float* dg_buffers[2] = {ws + 2 * MB * Hp, ws + 2 * MB * Hp + MB * G * H};
  int len[MB], sense = 0, parity = 0;
  for (int r = 0; r < MB; ++r) {
    len[r] = a.lengths[r];
    copy_n(dh + r * Hp + u_lo, a.dh_n + (long)r * H + u_lo, nu);
    if (Cell::has_c) copy_n(dc + r * Hp + u_lo, a.dc_n + (long)r * H + u_lo, nu);
  }
  for (int s = 0; s < T; ++s) {
    const int t = a.reverse ? s : T - 1 - s;
    const long row = (long)t * B;
    float* dg = dg_buffers[parity];
    bool any = false;
    for (int r = 0; r < MB; ++r) any |= t < len[r];
    for (int r = 0; r < MB; ++r) {
      if (t < len[r]) {
        backward_row<Cell>(a, t, r, len[r], dh + r * Hp, dc + r * Hp, dg + r * G * H, u_lo, u_hi);
        continue;
      }
      for (int g = 0; g < G; ++g) {
        zero_n(a.dgx + (row + r) * G * H + g * H + u_lo, nu);
        zero_n(dg + r * G * H + g * H + u_lo, nu);
      }
      if (Cell::gru) zero_n(a.dghn + (row + r) * H + u_lo, nu);
    }
    if (!any) continue;  // every thread sees the same lengths: all skip the barrier together
    team_barrier(bar, n, sense);
    int p = p_lo;
    for (; p + NP <= p_hi; p += NP) backward_panels<MB, NP>(a, dg, dh, p);
    for (; p < p_hi; ++p) backward_panels<MB, 1>(a, dg, dh, p);
    parity ^= 1;
  }
  for (int r = 0; r < MB; ++r) {
    copy_n(a.dh0 + (long)r * H + u_lo, dh + r * Hp + u_lo, nu);
    if (Cell::has_c) copy_n(a.dc0 + (long)r * H + u_lo, dc + r * Hp + u_lo, nu);
  }
}

#define FASTRNN_TEAM(TILE, Cell)                                   \
  switch (a.B) {                                                   \
    case 8: if constexpr (forward_rows<Cell>() >= 8) TILE<Cell, 8>(a, tid, n, ws, bar); break; \
    case 7: if constexpr (forward_rows<Cell>() >= 7) TILE<Cell, 7>(a, tid, n, ws, bar); break; \
    case 6: if constexpr (forward_rows<Cell>() >= 6) TILE<Cell, 6>(a, tid, n, ws, bar); break; \
    case 5: if constexpr (forward_rows<Cell>() >= 5) TILE<Cell, 5>(a, tid, n, ws, bar); break; \
    case 4: if constexpr (forward_rows<Cell>() >= 4) TILE<Cell, 4>(a, tid, n, ws, bar); break; \
    case 3: if constexpr (forward_rows<Cell>() >= 3) TILE<Cell, 3>(a, tid, n, ws, bar); break; \
    case 2: if constexpr (forward_rows<Cell>() >= 2) TILE<Cell, 2>(a, tid, n, ws, bar); break; \
    case 1: TILE<Cell, 1>(a, tid, n, ws, bar); break;               \
    default: break;                                                \
  }

template <class Cell>
static void forward_team_cell(const ForwardArgs& a, int tid, int n, float* ws, int* bar) {
  FASTRNN_TEAM(forward_team_tile, Cell)
}

template <class Cell>
static void backward_team_cell(const BackwardArgs& a, int tid, int n, float* ws, int* bar) {
  FASTRNN_TEAM(backward_team_tile, Cell)
}
#undef FASTRNN_TEAM

// ------------------------------------------------------------------------------------ entry points

// Tiles of R rows, then one tile of the remaining rows.
#define FASTRNN_TILES(TILE, R)                                 \
  for (; b + R <= b_end; b += R) TILE<Cell, R>(a, b, ws);      \
  switch (b_end - b) {                                         \
    case 7: if constexpr (R > 7) TILE<Cell, 7>(a, b, ws); break; \
    case 6: if constexpr (R > 6) TILE<Cell, 6>(a, b, ws); break; \
    case 5: if constexpr (R > 5) TILE<Cell, 5>(a, b, ws); break; \
    case 4: if constexpr (R > 4) TILE<Cell, 4>(a, b, ws); break; \
    case 3: if constexpr (R > 3) TILE<Cell, 3>(a, b, ws); break; \
    case 2: if constexpr (R > 2) TILE<Cell, 2>(a, b, ws); break; \
    case 1: if constexpr (R > 1) TILE<Cell, 1>(a, b, ws); break; \
    default: break;                                            \
  }

template <class Cell>
static void forward_cell(const ForwardArgs& a, int b, int b_end, float* ws) {
  if (b_end - b > forward_rows<Cell>()) {
    forward_chunk<Cell>(a, b, b_end, ws);
    return;
  }
  FASTRNN_TILES(forward_tile, forward_rows<Cell>())
}

template <class Cell>
static void backward_cell(const BackwardArgs& a, int b, int b_end, float* ws) {
  FASTRNN_TILES(backward_tile, MAX_ROWS)
}
#undef FASTRNN_TILES

// Scratch for rows [b_begin, b_end) (rows of them): a tile's two (MAX_ROWS, Hp) state buffers
// and (MAX_ROWS, max(Hp, G*H)), or forward_chunk's (rows, Hp) x 3 and partial sums.
long workspace_floats(int cell, int H, int rows) {
  const long Hp = (long)((H + W - 1) / W) * W, GH = (long)num_gates(cell) * H;
  const long tile = MAX_ROWS * (2 * Hp + (GH > Hp ? GH : Hp));
  const long chunk = rows * (3 * Hp + 8L * 4 * W);  // forward_chunk: states and partial sums
  return tile > chunk ? tile : chunk;
}

void forward_rows(const ForwardArgs& a, int b_begin, int b_end, float* ws) {
  switch (a.cell) {
    case RNN_TANH: forward_cell<Elman<false>>(a, b_begin, b_end, ws); break;
    case RNN_RELU: forward_cell<Elman<true>>(a, b_begin, b_end, ws); break;
    case LSTM: forward_cell<Lstm>(a, b_begin, b_end, ws); break;
    case GRU: forward_cell<Gru>(a, b_begin, b_end, ws); break;
    default: break;  // the host checks the cell id
  }
}

void backward_rows(const BackwardArgs& a, int b_begin, int b_end, float* ws) {
  switch (a.cell) {
    case RNN_TANH: backward_cell<Elman<false>>(a, b_begin, b_end, ws); break;
    case RNN_RELU: backward_cell<Elman<true>>(a, b_begin, b_end, ws); break;
    case LSTM: backward_cell<Lstm>(a, b_begin, b_end, ws); break;
    case GRU: backward_cell<Gru>(a, b_begin, b_end, ws); break;
    default: break;
  }
}

int team_rows(int cell) {
  switch (cell) {
    case RNN_TANH:
    case RNN_RELU: return forward_rows<Elman<false>>();
    case LSTM: return forward_rows<Lstm>();
    case GRU: return forward_rows<Gru>();
    default: return 0;
  }
}

long team_workspace_floats(int cell, int H) {
  const long Hp = (long)((H + W - 1) / W) * W, GH = (long)num_gates(cell) * H;
  return MAX_ROWS * (3 * Hp + 2 * GH);
}

void forward_team(const ForwardArgs& a, int tid, int n, float* ws, int* bar) {
  switch (a.cell) {
    case RNN_TANH: forward_team_cell<Elman<false>>(a, tid, n, ws, bar); break;
    case RNN_RELU: forward_team_cell<Elman<true>>(a, tid, n, ws, bar); break;
    case LSTM: forward_team_cell<Lstm>(a, tid, n, ws, bar); break;
    case GRU: forward_team_cell<Gru>(a, tid, n, ws, bar); break;
    default: break;
  }
}

void backward_team(const BackwardArgs& a, int tid, int n, float* ws, int* bar) {
  switch (a.cell) {
    case RNN_TANH: backward_team_cell<Elman<false>>(a, tid, n, ws, bar); break;
    case RNN_RELU: backward_team_cell<Elman<true>>(a, tid, n, ws, bar); break;
    case LSTM: backward_team_cell<Lstm>(a, tid, n, ws, bar); break;
    case GRU: backward_team_cell<Gru>(a, tid, n, ws, bar); break;
    default: break;
  }
}

int vector_width() { return W; }

}  // namespace FASTRNN_ISA
}  // namespace fastrnn_cpu
