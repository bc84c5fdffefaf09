// GPU test of the tensor-core wrapper (kernels/mma.cuh) alone: one warp runs mma_16x8x16 on a
// random 16x16 A and 16x8 B loaded by the fragment layout mma.cuh documents, and the result must
// match a plain loop. This is the first thing to run on a new GPU: the CPU emulation
// (tests/cpp/host_emulation.h) restates the same layout, so only real hardware can show that the
// layout itself is right. Needs a GPU to run (exits 1 with a message otherwise).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "mma.cuh"

namespace {

// a: 16x16 row-major, b: 8 rows of 16 (b[n][k], i.e. B column n), d: 16x8 row-major.
template <typename T>
__global__ void mma_kernel(const T* a, const T* b, float* d) {
  const int lane = threadIdx.x, g = lane / 4, q = lane % 4;
  const uint32_t af[4] = {fastrnn::load_pair(a + g * 16 + 2 * q), fastrnn::load_pair(a + (g + 8) * 16 + 2 * q),
                          fastrnn::load_pair(a + g * 16 + 2 * q + 8), fastrnn::load_pair(a + (g + 8) * 16 + 2 * q + 8)};
  const uint32_t bf[2] = {fastrnn::load_pair(b + g * 16 + 2 * q), fastrnn::load_pair(b + g * 16 + 2 * q + 8)};
  float acc[4] = {0.5f, -0.25f, 1.f, 2.f};  // a non-zero C: the instruction accumulates
  fastrnn::mma_16x8x16<T>(acc, af, bf);
  d[g * 8 + 2 * q] = acc[0];
  d[g * 8 + 2 * q + 1] = acc[1];
  d[(g + 8) * 8 + 2 * q] = acc[2];
  d[(g + 8) * 8 + 2 * q + 1] = acc[3];
}

// The TF32 instruction: a 16x8 A and an 8x8 B (b[n][k]), same D layout.
__global__ void mma_tf32_kernel(const float* a, const float* b, float* d) {
  const int lane = threadIdx.x, g = lane / 4, q = lane % 4;
  const uint32_t af[4] = {fastrnn::to_tf32(a[g * 8 + q]), fastrnn::to_tf32(a[(g + 8) * 8 + q]),
                          fastrnn::to_tf32(a[g * 8 + q + 4]), fastrnn::to_tf32(a[(g + 8) * 8 + q + 4])};
  const uint32_t bf[2] = {fastrnn::to_tf32(b[g * 8 + q]), fastrnn::to_tf32(b[g * 8 + q + 4])};
  float acc[4] = {0.5f, -0.25f, 1.f, 2.f};
  fastrnn::mma_16x8x8_tf32(acc, af, bf);
  d[g * 8 + 2 * q] = acc[0];
  d[g * 8 + 2 * q + 1] = acc[1];
  d[(g + 8) * 8 + 2 * q] = acc[2];
  d[(g + 8) * 8 + 2 * q + 1] = acc[3];
}

int run_tf32(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> a(128), b(64);
  for (auto& v : a) v = normal(rng);
  for (auto& v : b) v = normal(rng);
  float *da = nullptr, *db = nullptr, *dd = nullptr;
  cudaMalloc(&da, a.size() * sizeof(float));
  cudaMalloc(&db, b.size() * sizeof(float));
  cudaMalloc(&dd, 128 * sizeof(float));
  cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice);
  mma_tf32_kernel<<<1, 32>>>(da, db, dd);
  std::vector<float> d(128);
  if (cudaMemcpy(d.data(), dd, d.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::printf("FAIL mma tf32: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  const float c0[4] = {0.5f, -0.25f, 1.f, 2.f};
  double worst = 0, scale = 0;
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      double want = c0[(m >= 8) * 2 + n % 2];
      for (int k = 0; k < 8; ++k) want += double(a[m * 8 + k]) * b[n * 8 + k];
      worst = std::max(worst, std::fabs(want - d[m * 8 + n]));
      scale = std::max(scale, std::fabs(want));
    }
  }
  // TF32 keeps 10 mantissa bits: relative rounding ~5e-4 per operand; a wrong layout is O(1).
  const bool ok = worst < 1e-2 * scale;
  std::printf("%s mma tf32: max |error| %.3g (max |D| %.3g)\n", ok ? "ok" : "FAIL", worst, scale);
  return ok ? 0 : 1;
}

template <typename T>
int run(const char* name, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<T> a(256), b(128);
  for (auto& v : a) v = fastrnn::from_float<T>(normal(rng));
  for (auto& v : b) v = fastrnn::from_float<T>(normal(rng));
  T *da = nullptr, *db = nullptr;
  float* dd = nullptr;
  cudaMalloc(&da, a.size() * sizeof(T));
  cudaMalloc(&db, b.size() * sizeof(T));
  cudaMalloc(&dd, 128 * sizeof(float));
  cudaMemcpy(da, a.data(), a.size() * sizeof(T), cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * sizeof(T), cudaMemcpyHostToDevice);
  mma_kernel<T><<<1, 32>>>(da, db, dd);
  std::vector<float> d(128);
  if (cudaMemcpy(d.data(), dd, d.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::printf("FAIL %s: %s\n", name, cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  const float c0[4] = {0.5f, -0.25f, 1.f, 2.f};
  double worst = 0;
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      double want = c0[(m >= 8) * 2 + n % 2];
      for (int k = 0; k < 16; ++k) want += double(fastrnn::to_float(a[m * 16 + k])) * fastrnn::to_float(b[n * 16 + k]);
      worst = std::max(worst, std::fabs(want - d[m * 8 + n]));
    }
  }
  // Products of 16-bit values are exact in fp32; only the fp32 sum of 17 terms rounds.
  const bool ok = worst < 1e-4;
  std::printf("%s %s: max |error| %.3g\n", ok ? "ok" : "FAIL", name, worst);
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no usable GPU\n");
    return 1;
  }
  std::mt19937 rng(3);
  return run<__nv_bfloat16>("mma bf16", rng) + run<__half>("mma fp16", rng) + run_tf32(rng);
}
