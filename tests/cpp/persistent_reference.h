// Shared by test_persistent.cu (GPU) and test_persistent_emulated.cpp (CPU emulation): random
// problems for the persistent kernels and their expected results from a plain CPU loop in double
// that uses the same per-cell math (kernels/cell_math.cuh, itself checked by test_cell_math.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cell_math.cuh"
#include "dtype.cuh"

namespace fastrnn_test {

inline int failures = 0;

inline void compare(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
  if (got.size() != want.size()) {
    std::printf("FAIL %s: size %zu, want %zu\n", what.c_str(), got.size(), want.size());
    ++failures;
    return;
  }
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) {
      std::printf("FAIL %s: NaN at %zu (element not written)\n", what.c_str(), i);
      ++failures;
      return;
    }
    err = std::max(err, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  if (err > tol * std::max(scale, 1e-30)) {
    std::printf("FAIL %s: max error %.3g, max |ref| %.3g\n", what.c_str(), err, scale);
    ++failures;
  }
}

// Inputs (values representable in T) and expected outputs of one layer-direction.
template <typename Cell, typename T>
struct Problem {
  static constexpr int G = Cell::kGates, S = Cell::kSaved;
  int64_t TT, B, H;
  bool reverse;
  std::vector<float> gx, w, b_hn, h0, c0, dout, dh_n, dc_n;
  std::vector<int32_t> lengths;
  std::vector<double> out, h_n, c_n, dgx, dghn, dh0, dc0;

  Problem(int64_t seq_len, int64_t batch, int64_t hidden, bool rev, std::mt19937& rng)
      : TT(seq_len), B(batch), H(hidden), reverse(rev) {
    const int64_t GH = G * H;
    std::normal_distribution<float> normal(0.f, 1.f);
    auto randv = [&](int64_t n, float scale) {
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& x : v) x = fastrnn::to_float(fastrnn::from_float<T>(scale * normal(rng)));
      return v;
    };
    gx = randv(TT * B * GH, 1.f);
    w = randv(GH * H, 1.5f / std::sqrt(static_cast<float>(H)));
    b_hn = randv(H, 0.5f);
    h0 = randv(B * H, 1.f);
    c0 = randv(B * H, 1.f);
    dout = randv(TT * B * H, 1.f);
    dh_n = randv(B * H, 1.f);
    dc_n = randv(B * H, 1.f);
    lengths.resize(static_cast<size_t>(B));
    // Full, zero and partial lengths.
    for (int64_t b = 0; b < B; ++b) lengths[b] = static_cast<int32_t>(b == 1 ? 0 : (b % 3 == 2 ? TT / 2 + 1 : TT));

    // Forward.
    std::vector<double> h(h0.begin(), h0.end()), c(c0.begin(), c0.end()), saved(TT * B * S * H, 0.0);
    out.assign(TT * B * H, 0.0);
    for (int64_t k = 0; k < TT; ++k) {
      const int64_t t = reverse ? TT - 1 - k : k;
      std::vector<double> hn = h, cn = c;
      for (int64_t b = 0; b < B; ++b) {
        if (t >= lengths[b]) continue;
        for (int64_t u = 0; u < H; ++u) {
          double x[G], y[G], sv[S], hv, cv;
          for (int g = 0; g < G; ++g) {
            x[g] = gx[(t * B + b) * GH + g * H + u];
            double acc = 0;
            for (int64_t j = 0; j < H; ++j) acc += w[(g * H + u) * H + j] * h[b * H + j];
            y[g] = acc;
          }
          if (Cell::kGruRecurrentBias) y[G - 1] += b_hn[u];
          Cell::forward(x, y, h[b * H + u], c[b * H + u], sv, hv, cv);
          for (int s = 0; s < S; ++s) saved[(t * B + b) * S * H + s * H + u] = sv[s];
          out[(t * B + b) * H + u] = hv;
          hn[b * H + u] = hv;
          cn[b * H + u] = cv;
        }
      }
      h = hn;
      if (Cell::kHasCellState) c = cn;
    }
    h_n = h;
    c_n = c;

    Gradients grads = backward(saved);
    dgx = std::move(grads.dgx);
    dghn = std::move(grads.dghn);
    dh0 = std::move(grads.dh0);
    dc0 = std::move(grads.dc0);
  }

  // The backward pass from the forward's saved values (the kernel's own, to check its backward
  // alone: a ReLU whose pre-activation the rounded forward pushed across 0 changes the local
  // derivative from 1 to 0, which says nothing about the backward kernel).
  struct Gradients {
    std::vector<double> dgx, dghn, dh0, dc0;
  };
  Gradients backward(const std::vector<double>& saved) const {
    const int64_t GH = G * H;
    std::vector<double> dh(dh_n.begin(), dh_n.end()), dc(dc_n.begin(), dc_n.end());
    Gradients r;
    r.dgx.assign(TT * B * GH, 0.0);
    r.dghn.assign(TT * B * H, 0.0);
    for (int64_t k = 0; k < TT; ++k) {
      const int64_t t = reverse ? k : TT - 1 - k;
      for (int64_t b = 0; b < B; ++b) {
        if (t >= lengths[b]) continue;
        std::vector<double> dgh_row(GH), dh_new(H);
        for (int64_t u = 0; u < H; ++u) {
          double sv[S], dx[G], dy[G], dhd, dcp;
          for (int s = 0; s < S; ++s) sv[s] = saved[(t * B + b) * S * H + s * H + u];
          Cell::backward(sv, dh[b * H + u] + dout[(t * B + b) * H + u], dc[b * H + u], dx, dy, dhd, dcp);
          for (int g = 0; g < G; ++g) {
            r.dgx[(t * B + b) * GH + g * H + u] = dx[g];
            dgh_row[g * H + u] = dy[g];
          }
          r.dghn[(t * B + b) * H + u] = dy[G - 1];
          dh_new[u] = dhd;
          dc[b * H + u] = dcp;
        }
        for (int64_t j = 0; j < H; ++j) {
          double acc = dh_new[j];
          for (int64_t row = 0; row < GH; ++row) acc += dgh_row[row] * w[row * H + j];
          dh[b * H + j] = acc;
        }
      }
    }
    r.dh0 = dh;
    r.dc0 = dc;
    return r;
  }


  std::string tag(const char* name) const {
    return std::string(name) + (reverse ? " reverse" : " forward") + " H=" + std::to_string(H) +
           " B=" + std::to_string(B) + " T=" + std::to_string(TT);
  }
};

}  // namespace fastrnn_test
