// Per-cell pointwise forward and backward of fastrnn's recurrent cells, for the CUDA kernels.
//
// The equations are those of fastrnn/cells.py (the one place that defines the cells) in the same
// gate order; the derivatives are those of fastrnn/triton/cell_pointwise.py. Each cell is a
// struct with static functions usable on host and device (`FASTRNN_HD`), templated on the real
// type R: the kernels use R = float (fp32 math whatever the storage dtype); the host test
// (tests/cpp/test_cell_math.cpp) also instantiates R = double for finite differences.
//
// Per hidden unit and step, with a_g the pre-activations:
//   gx[g]  = (W_ih x + b)[g]          input projection (+ folded biases), G values
//   gh[g]  = (W_hh h_prev)[g]          recurrent product; for the GRU's n gate + b_hn
// Elman:  h = act(gx + gh)
// LSTM:   i,f,g,o = s,s,tanh,s(gx + gh);  c = f*c_prev + i*g;  h = o*tanh(c)
// GRU:    r = s(gx_r+gh_r), z = s(gx_z+gh_z), n = tanh(gx_n + r*gh_n);  h = n + z*(h_prev - n)
//
// forward() writes kSaved fp32 values per unit for backward() (layout owned by this file):
//   Elman: h;   LSTM: i, f, g, o, c_prev;   GRU: r, z, n, gh_n, h_prev.
// backward() takes dh (total gradient reaching h at this step) and dc_next (LSTM: carried from
// the next step) and returns dgx (gradient of gx, G values), dgh (gradient of gh, G values; equal
// to dgx except the GRU's n gate: da_n * r), dh_direct (the part of dh_prev that does not go
// through W_hh: GRU dh*z, else 0) and dc_prev (LSTM).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FASTRNN_HD __host__ __device__ __forceinline__
#else
#define FASTRNN_HD inline
#endif

namespace fastrnn {

// Numerically safe transcendental helpers (no overflow to NaN for large |x|).
FASTRNN_HD float exp_r(float x) { return expf(x); }
FASTRNN_HD double exp_r(double x) { return exp(x); }

template <typename R>
FASTRNN_HD R sigmoid(R x) {
  // exp(-x) may overflow to inf for very negative x: 1 / inf = 0, no NaN.
  return R(1) / (R(1) + exp_r(-x));
}

template <typename R>
FASTRNN_HD R tanh_r(R x) {
  // tanh(|x|) = (1 - e) / (1 + e), e = exp(-2|x|) in (0, 1]: never overflows.
  const R ax = x < R(0) ? -x : x;
  const R e = exp_r(R(-2) * ax);
  const R t = (R(1) - e) / (R(1) + e);
  return x < R(0) ? -t : t;
}

// Cell ids shared with the host code and Python (fastrnn/cells.py's kernel_id). Everything else
// the host code needs of a cell it reads from these traits (csrc/launch.h: CellInfo), never from
// the id. Adding a cell: a struct like these, its id here, a case in launch.h's dispatch_cell.
enum CellId : int { kRnnTanh = 0, kRnnRelu = 1, kLstm = 2, kGru = 3 };

template <bool kRelu>
struct ElmanCell {
  static constexpr int kId = kRelu ? kRnnRelu : kRnnTanh;
  static constexpr const char* kName = kRelu ? "rnn_relu" : "rnn_tanh";  // fastrnn/cells.py's name
  static constexpr int kGates = 1;
  static constexpr int kSaved = 1;
  static constexpr bool kHasCellState = false;
  static constexpr bool kGruRecurrentBias = false;  // b_hn added to gh of the last gate

  template <typename R>
  static FASTRNN_HD void forward(const R* gx, const R* gh, R /*h_prev*/, R /*c_prev*/, R* saved, R& h, R& c) {
    const R a = gx[0] + gh[0];
    h = kRelu ? (a > R(0) ? a : R(0)) : tanh_r(a);
    c = R(0);
    saved[0] = h;
  }

  template <typename R>
  static FASTRNN_HD void backward(const R* saved, R dh, R /*dc_next*/, R* dgx, R* dgh, R& dh_direct, R& dc_prev) {
    const R h = saved[0];
    const R da = kRelu ? (h > R(0) ? dh : R(0)) : dh * (R(1) - h * h);
    dgx[0] = da;
    dgh[0] = da;
    dh_direct = R(0);
    dc_prev = R(0);
  }
};

using ElmanTanhCell = ElmanCell<false>;
using ElmanReluCell = ElmanCell<true>;

struct LstmCell {
  static constexpr int kId = kLstm;
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4;
  static constexpr int kSaved = 5;
  static constexpr bool kHasCellState = true;
  static constexpr bool kGruRecurrentBias = false;

  template <typename R>
  static FASTRNN_HD void forward(const R* gx, const R* gh, R /*h_prev*/, R c_prev, R* saved, R& h, R& c) {
    const R i = sigmoid(gx[0] + gh[0]);
    const R f = sigmoid(gx[1] + gh[1]);
    const R g = tanh_r(gx[2] + gh[2]);
    const R o = sigmoid(gx[3] + gh[3]);
    c = f * c_prev + i * g;
    h = o * tanh_r(c);
    saved[0] = i;
    saved[1] = f;
    saved[2] = g;
    saved[3] = o;
    saved[4] = c_prev;
  }

  template <typename R>
  static FASTRNN_HD void backward(const R* saved, R dh, R dc_next, R* dgx, R* dgh, R& dh_direct, R& dc_prev) {
    const R i = saved[0], f = saved[1], g = saved[2], o = saved[3], c_prev = saved[4];
    const R c = f * c_prev + i * g;
    const R tc = tanh_r(c);
    const R dc = dh * o * (R(1) - tc * tc) + dc_next;
    dgx[0] = dc * g * i * (R(1) - i);
    dgx[1] = dc * c_prev * f * (R(1) - f);
    dgx[2] = dc * i * (R(1) - g * g);
    dgx[3] = dh * tc * o * (R(1) - o);
    for (int k = 0; k < 4; ++k) dgh[k] = dgx[k];
    dh_direct = R(0);
    dc_prev = dc * f;
  }
};

struct GruCell {
  static constexpr int kId = kGru;
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 3;
  static constexpr int kSaved = 5;
  static constexpr bool kHasCellState = false;
  static constexpr bool kGruRecurrentBias = true;

  template <typename R>
  static FASTRNN_HD void forward(const R* gx, const R* gh, R h_prev, R /*c_prev*/, R* saved, R& h, R& c) {
    const R r = sigmoid(gx[0] + gh[0]);
    const R z = sigmoid(gx[1] + gh[1]);
    const R n = tanh_r(gx[2] + r * gh[2]);
    h = n + z * (h_prev - n);
    c = R(0);
    saved[0] = r;
    saved[1] = z;
    saved[2] = n;
    saved[3] = gh[2];
    saved[4] = h_prev;
  }

  template <typename R>
  static FASTRNN_HD void backward(const R* saved, R dh, R /*dc_next*/, R* dgx, R* dgh, R& dh_direct, R& dc_prev) {
    const R r = saved[0], z = saved[1], n = saved[2], gh_n = saved[3], h_prev = saved[4];
    const R da_n = dh * (R(1) - z) * (R(1) - n * n);
    const R da_z = dh * (h_prev - n) * z * (R(1) - z);
    const R da_r = da_n * gh_n * r * (R(1) - r);
    dgx[0] = da_r;
    dgx[1] = da_z;
    dgx[2] = da_n;
    dgh[0] = da_r;
    dgh[1] = da_z;
    dgh[2] = da_n * r;
    dh_direct = dh * z;
    dc_prev = R(0);
  }
};

}  // namespace fastrnn
