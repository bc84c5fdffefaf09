// What the host (host.cpp) hands the fused CPU recurrence of one layer-direction, and the entry
// points each instruction-set build of recurrence.h (isa_*.cpp) defines. Plain data: no torch.
//
// Shapes (row-major, float32, contiguous), with G gates, S saved values per unit and step, and
// W floats per vector of the instruction set (vector_width()):
//   gx        (T, B, G*H)   x W_ih^T + biases (the GRU's b_hn excluded: it is b_hn below)
//   packed    forward:  (P, H, G, W)    W_hh^T in panels of W hidden units, all G gates of a
//                                       unit in one panel (so the cell update stays in registers)
//             backward: (P, G*H, W)     W_hh in panels of W hidden units (the columns of W_hh)
//             P = ceil(H / W); units past H are zero.
//   out       (T, B, H)     h_t; zero where a step is inactive (t >= lengths[b])
//   saved     (T, B, S*H)   what the backward needs (cells.h); null: not saved (inference)
//   dgx       (T, B, G*H)   d loss / d gx;  dghn (T, B, H): the GRU's d loss / d (W_hn h + b_hn)
#pragma once

#include <stdint.h>

namespace fastrnn_cpu {

struct ForwardArgs {
  int cell, T, B, H;
  bool reverse;
  const float* gx;
  const float* packed;
  const float* b_hn;  // (H,) GRU only, may be null (no bias)
  const float* h0;    // (B, H)
  const float* c0;    // (B, H) LSTM only
  const int32_t* lengths;  // (B,), each in [0, T]
  float* out;
  float* h_n;
  float* c_n;    // LSTM only
  float* saved;  // null: inference, nothing saved
};

struct BackwardArgs {
  int cell, T, B, H;
  bool reverse;
  const float* dout;    // (T, B, H)
  const float* dh_n;    // (B, H)
  const float* dc_n;    // (B, H) LSTM only
  const float* packed;  // backward layout
  const float* saved;
  const float* out;
  const float* h0;
  const float* c0;
  const int32_t* lengths;
  float* dgx;
  float* dghn;  // GRU only
  float* dh0;
  float* dc0;  // LSTM only
};

// forward_rows / backward_rows: rows [b_begin, b_end) of the batch, all T steps, with a zeroed
// scratch of workspace_floats(cell, H, b_end - b_begin) floats. Rows are independent: any split of the batch
// gives bitwise the same results (the thread count never changes a number).
// forward_team / backward_team: member tid of n threads running together (B <= team_rows(cell)),
// each on its share of the hidden units, sharing a zeroed scratch of team_workspace_floats(cell,
// H) floats and a zeroed barrier of 32 ints; same bits as one thread (recurrence.h, teams).
#define FASTRNN_CPU_DECLARE_ISA(ns)                                                            \
  namespace ns {                                                                              \
  void forward_rows(const ForwardArgs& args, int b_begin, int b_end, float* workspace);       \
  void backward_rows(const BackwardArgs& args, int b_begin, int b_end, float* workspace);     \
  long workspace_floats(int cell, int H, int rows);                                           \
  void forward_team(const ForwardArgs& args, int tid, int n, float* workspace, int* barrier);  \
  void backward_team(const BackwardArgs& args, int tid, int n, float* workspace, int* barrier);\
  int team_rows(int cell);                                                                    \
  long team_workspace_floats(int cell, int H);                                                \
  int vector_width();                                                                         \
  }
FASTRNN_CPU_DECLARE_ISA(avx512)
FASTRNN_CPU_DECLARE_ISA(avx2)
FASTRNN_CPU_DECLARE_ISA(portable)
#undef FASTRNN_CPU_DECLARE_ISA

}  // namespace fastrnn_cpu
