// Host-only test of kernels/cell_math.cuh (the per-cell pointwise math is __host__ __device__,
// so the CPU can check it): forward against formulas written out independently here, backward
// against central finite differences of the forward in double. Runs without a GPU:
//   ctest --test-dir build/cmake -R cell_math
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "cell_math.cuh"

namespace {

int failures = 0;

void expect_close(double got, double want, double tol, const std::string& what) {
  const double err = std::fabs(got - want);
  if (!(err <= tol * (1.0 + std::fabs(want)))) {  // also fails on NaN
    std::printf("FAIL %s: got %.12g, want %.12g (|err| %.3g)\n", what.c_str(), got, want, err);
    ++failures;
  }
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Independent forward formulas (fastrnn/cells.py): returns h, sets c.
double expected_forward(int cell, const double* gx, const double* gh, double h_prev, double c_prev, double& c) {
  c = 0.0;
  switch (cell) {
    case fastrnn::kRnnTanh: return std::tanh(gx[0] + gh[0]);
    case fastrnn::kRnnRelu: return std::max(0.0, gx[0] + gh[0]);
    case fastrnn::kLstm: {
      const double i = sig(gx[0] + gh[0]), f = sig(gx[1] + gh[1]), g = std::tanh(gx[2] + gh[2]), o = sig(gx[3] + gh[3]);
      c = f * c_prev + i * g;
      return o * std::tanh(c);
    }
    default: {  // GRU
      const double r = sig(gx[0] + gh[0]), z = sig(gx[1] + gh[1]);
      const double n = std::tanh(gx[2] + r * gh[2]);
      return (1.0 - z) * n + z * h_prev;
    }
  }
}

template <typename Cell>
void check_cell(const char* name, std::mt19937& rng) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int trial = 0; trial < 200; ++trial) {
    double gx[G], gh[G];
    for (int g = 0; g < G; ++g) {
      gx[g] = 1.5 * normal(rng);
      gh[g] = 1.5 * normal(rng);
    }
    if (Cell::kId == fastrnn::kRnnRelu && std::fabs(gx[0] + gh[0]) < 1e-3) continue;  // relu's kink
    const double h_prev = normal(rng), c_prev = normal(rng), wh = normal(rng), wc = Cell::kHasCellState ? normal(rng) : 0.0;
    const std::string tag = std::string(name) + " trial " + std::to_string(trial);

    // Forward, double and float, against the independent formulas.
    double saved[S], h, c, want_c;
    Cell::forward(gx, gh, h_prev, c_prev, saved, h, c);
    const double want_h = expected_forward(Cell::kId, gx, gh, h_prev, c_prev, want_c);
    expect_close(h, want_h, 1e-12, tag + " h (double)");
    if (Cell::kHasCellState) expect_close(c, want_c, 1e-12, tag + " c (double)");
    float gxf[G], ghf[G], savedf[S], hf, cf;
    for (int g = 0; g < G; ++g) {
      gxf[g] = static_cast<float>(gx[g]);
      ghf[g] = static_cast<float>(gh[g]);
    }
    Cell::forward(gxf, ghf, static_cast<float>(h_prev), static_cast<float>(c_prev), savedf, hf, cf);
    expect_close(hf, want_h, 2e-6, tag + " h (float)");
    if (Cell::kHasCellState) expect_close(cf, want_c, 2e-6, tag + " c (float)");

    // Backward of L = wh * h + wc * c against central differences.
    double dgx[G], dgh[G], dh_direct, dc_prev;
    Cell::backward(saved, wh, wc, dgx, dgh, dh_direct, dc_prev);
    auto loss = [&](const double* x, const double* y, double hp, double cp) {
      double s[S], hh, cc;
      Cell::forward(x, y, hp, cp, s, hh, cc);
      return wh * hh + wc * cc;
    };
    const double eps = 1e-6, tol = 1e-6;
    for (int g = 0; g < G; ++g) {
      double xp[G], xm[G];
      for (int k = 0; k < G; ++k) xp[k] = xm[k] = gx[k];
      xp[g] += eps;
      xm[g] -= eps;
      expect_close(dgx[g], (loss(xp, gh, h_prev, c_prev) - loss(xm, gh, h_prev, c_prev)) / (2 * eps), tol,
                   tag + " dgx[" + std::to_string(g) + "]");
      double yp[G], ym[G];
      for (int k = 0; k < G; ++k) yp[k] = ym[k] = gh[k];
      yp[g] += eps;
      ym[g] -= eps;
      expect_close(dgh[g], (loss(gx, yp, h_prev, c_prev) - loss(gx, ym, h_prev, c_prev)) / (2 * eps), tol,
                   tag + " dgh[" + std::to_string(g) + "]");
    }
    expect_close(dh_direct, (loss(gx, gh, h_prev + eps, c_prev) - loss(gx, gh, h_prev - eps, c_prev)) / (2 * eps), tol,
                 tag + " dh_direct");
    expect_close(dc_prev, (loss(gx, gh, h_prev, c_prev + eps) - loss(gx, gh, h_prev, c_prev - eps)) / (2 * eps), tol,
                 tag + " dc_prev");

    // Backward in float agrees with double.
    float dgxf[G], dghf[G], dhdf, dcpf;
    Cell::backward(savedf, static_cast<float>(wh), static_cast<float>(wc), dgxf, dghf, dhdf, dcpf);
    for (int g = 0; g < G; ++g) expect_close(dgxf[g], dgx[g], 1e-5, tag + " dgx (float)");
    expect_close(dcpf, dc_prev, 1e-5, tag + " dc_prev (float)");
  }
}

void check_saturation() {
  // Large |x| must saturate, never produce NaN (exp overflow).
  expect_close(fastrnn::sigmoid(-1000.f), 0.0, 0.0, "sigmoid(-1000)");
  expect_close(fastrnn::sigmoid(1000.f), 1.0, 0.0, "sigmoid(1000)");
  expect_close(fastrnn::tanh_r(1000.f), 1.0, 0.0, "tanh(1000)");
  expect_close(fastrnn::tanh_r(-1000.f), -1.0, 0.0, "tanh(-1000)");
  expect_close(fastrnn::tanh_r(0.5), std::tanh(0.5), 1e-15, "tanh(0.5)");
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  check_cell<fastrnn::ElmanTanhCell>("rnn_tanh", rng);
  check_cell<fastrnn::ElmanReluCell>("rnn_relu", rng);
  check_cell<fastrnn::LstmCell>("lstm", rng);
  check_cell<fastrnn::GruCell>("gru", rng);
  check_saturation();
  if (failures > 0) {
    std::printf("cell_math: %d failures\n", failures);
    return 1;
  }
  std::printf("cell_math: all cells ok (forward vs formulas, backward vs finite differences)\n");
  return 0;
}
