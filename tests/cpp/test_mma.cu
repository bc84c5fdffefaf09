// GPU test of the tensor-core wrappers (kernels/mma.cuh) alone: one warp runs one instruction on
// a random A (16 x K) and B (K x 8) loaded by the fragment layout mma.cuh documents, and the
// result must match a plain loop. This is the first thing to run on a new GPU: the CPU emulation
// (tests/cpp/host_emulation.h) restates the same layouts, so only real hardware can show that
// the layouts themselves are right; also the ldmatrix row addressing block_product.cuh uses.
// Needs a GPU to run (exits 1 with a message otherwise).
#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "mma.cuh"

namespace {

constexpr float kC0[4] = {0.5f, -0.25f, 1.f, 2.f};  // a non-zero C per fragment slot: D = C + A.B

// a: 16 x K row-major; b: 8 rows of K (b[n][k] = B[k][n]); d: 16 x 8 row-major.
// K = 16: mma_16x8x16 with T = bf16 / fp16; K = 8: mma_16x8x8_tf32 with T = float.
// kLdmatrix: the 16-bit fragments come from shared memory by ldmatrix_x4 with the row addresses
// block_product.cuh uses (A: row lane % 8 + 8 * (i % 2), columns 8 * (i / 2); B: row lane % 8,
// columns 8 * (i % 2); i = lane / 8).
template <typename T, int K, bool kLdmatrix = false>
__global__ void mma_kernel(const T* a, const T* b, float* d) {
  const int lane = threadIdx.x, g = lane / 4, q = lane % 4;
  float acc[4] = {kC0[0], kC0[1], kC0[2], kC0[3]};
  if constexpr (kLdmatrix) {
    __shared__ __align__(16) T as[16 * K];
    __shared__ __align__(16) T bs[8 * K];
    for (int i = lane; i < 16 * K; i += 32) as[i] = a[i];
    for (int i = lane; i < 8 * K; i += 32) bs[i] = b[i];
    __syncwarp();
    const int i = lane / 8, r = lane % 8;
    uint32_t af[4], bf4[4];
    fastrnn::ldmatrix_x4(af, as + (r + 8 * (i % 2)) * K + 8 * (i / 2));
    fastrnn::ldmatrix_x4(bf4, bs + r * K + 8 * (i % 2));
    const uint32_t bf[2] = {bf4[0], bf4[1]};
    fastrnn::mma_16x8x16<T>(acc, af, bf);
  } else if constexpr (K == 16) {
    const uint32_t af[4] = {fastrnn::load_pair(a + g * K + 2 * q), fastrnn::load_pair(a + (g + 8) * K + 2 * q),
                            fastrnn::load_pair(a + g * K + 2 * q + 8),
                            fastrnn::load_pair(a + (g + 8) * K + 2 * q + 8)};
    const uint32_t bf[2] = {fastrnn::load_pair(b + g * K + 2 * q), fastrnn::load_pair(b + g * K + 2 * q + 8)};
    fastrnn::mma_16x8x16<T>(acc, af, bf);
  } else {
    const uint32_t af[4] = {fastrnn::to_tf32(a[g * K + q]), fastrnn::to_tf32(a[(g + 8) * K + q]),
                            fastrnn::to_tf32(a[g * K + q + 4]), fastrnn::to_tf32(a[(g + 8) * K + q + 4])};
    const uint32_t bf[2] = {fastrnn::to_tf32(b[g * K + q]), fastrnn::to_tf32(b[g * K + q + 4])};
    fastrnn::mma_16x8x8_tf32(acc, af, bf);
  }
  d[g * 8 + 2 * q] = acc[0];
  d[g * 8 + 2 * q + 1] = acc[1];
  d[(g + 8) * 8 + 2 * q] = acc[2];
  d[(g + 8) * 8 + 2 * q + 1] = acc[3];
}

// rel_tol: 16-bit products are exact in fp32, so only the fp32 sum rounds (~1e-7); TF32 keeps
// 10 mantissa bits (~5e-4 per operand). A wrong layout gives errors of order 1.
template <typename T, int K, bool kLdmatrix = false>
int run(const char* name, double rel_tol, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<T> a(16 * K), b(8 * K);
  for (auto& v : a) v = fastrnn::from_float<T>(normal(rng));
  for (auto& v : b) v = fastrnn::from_float<T>(normal(rng));
  T *da = nullptr, *db = nullptr;
  float* dd = nullptr;
  cudaMalloc(&da, a.size() * sizeof(T));
  cudaMalloc(&db, b.size() * sizeof(T));
  cudaMalloc(&dd, 128 * sizeof(float));
  cudaMemcpy(da, a.data(), a.size() * sizeof(T), cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * sizeof(T), cudaMemcpyHostToDevice);
  mma_kernel<T, K, kLdmatrix><<<1, 32>>>(da, db, dd);
  std::vector<float> d(128);
  if (cudaMemcpy(d.data(), dd, d.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::printf("FAIL %s: %s\n", name, cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  double worst = 0, scale = 0;
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      double want = kC0[(m >= 8) * 2 + n % 2];
      for (int k = 0; k < K; ++k) want += double(fastrnn::to_float(a[m * K + k])) * fastrnn::to_float(b[n * K + k]);
      worst = std::max(worst, std::fabs(want - d[m * 8 + n]));
      scale = std::max(scale, std::fabs(want));
    }
  }
  const bool ok = worst <= rel_tol * scale;
  std::printf("%s %s: max |error| %.3g, max |D| %.3g\n", ok ? "ok" : "FAIL", name, worst, scale);
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
  return run<__nv_bfloat16, 16>("mma m16n8k16 bf16", 1e-5, rng) + run<__half, 16>("mma m16n8k16 fp16", 1e-5, rng) +
         run<float, 8>("mma m16n8k8 tf32", 1e-2, rng) + run<__nv_bfloat16, 16, true>("ldmatrix + mma bf16", 1e-5, rng) +
         run<__half, 16, true>("ldmatrix + mma fp16", 1e-5, rng);
}
