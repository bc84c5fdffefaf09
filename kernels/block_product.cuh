// The recurrent product of one block and one batch tile, the only matrix work inside the
// persistent kernels (layout.cuh names the operands):
//     C[m][n] = sum_k A[m][k] * B[n][k]      m < M (block's rows), n < nb (<= 8), k < K
// A and B live in shared memory with row stride ld; their pad columns [K, ld) must hold zeros
// (the kernels zero them once). The K dimension is split over the block's warps: warp w takes the
// 16-wide k-tiles w, w + warps, ... and writes its share of C to its own slab of `part`;
// partial_sum() adds the shares. Rows m >= M are never read.
//   bf16 / fp16: one mma.m16n8k16 per (16-row tile, k-tile) on tensor cores, fp32 accumulation.
//   fp32 with tf32 = true (torch's matmul TF32 flag): two mma.m16n8k8.tf32 per (row tile, k-tile).
//   fp32 otherwise: FMA on the CUDA cores (full fp32).
// Callers __syncthreads() between staging B, block_product() and reading the partials.
#pragma once

#include <cstdint>

#include "dtype.cuh"
#include "layout.cuh"
#include "mma.cuh"

namespace fastrnn {

// The warp's slab of partials: row-major (m_tiles*16) x 8 fp32, so row m, column n is at m*8 + n.
__device__ __forceinline__ float* partial_slab(float* part, int warp, int64_t m_tiles) {
  return part + static_cast<int64_t>(warp) * m_tiles * kTileM * kTileN;
}

// Stores one warp's 16x8 accumulator tile (fragment layout of mma.cuh) into its partials.
__device__ __forceinline__ void store_tile(float* c, int g, int q, const float (&d)[4]) {
  c[g * kTileN + 2 * q] = d[0];
  c[g * kTileN + 2 * q + 1] = d[1];
  c[(g + 8) * kTileN + 2 * q] = d[2];
  c[(g + 8) * kTileN + 2 * q + 1] = d[3];
}

template <typename T>
__device__ __forceinline__ void block_product(const T* a, const T* b, int64_t nb, const ProductShape& s, float* part,
                                              bool tf32) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int64_t k_tiles = ceil_div(s.k, kTileK);
  float* slab = partial_slab(part, warp, s.m_tiles);
  if constexpr (kTensorCoreType<T>) {
    const int g = lane / 4, q = lane % 4;
    const bool b_ok = g < nb;  // columns n >= nb of C are not used: feed zeros
    const T* b_row = b + g * s.ld + 2 * q;
    for (int64_t mt = 0; mt < s.m_tiles; ++mt) {
      const int64_t r0 = mt * kTileM + g, r1 = r0 + 8;
      const bool ok0 = r0 < s.rows, ok1 = r1 < s.rows;
      const T* a0 = a + r0 * s.ld + 2 * q;
      const T* a1 = a + r1 * s.ld + 2 * q;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t kt = warp; kt < k_tiles; kt += warps) {  // warp-uniform: every lane runs the mma
        const int64_t k = kt * kTileK;
        const uint32_t af[4] = {ok0 ? load_pair(a0 + k) : 0u, ok1 ? load_pair(a1 + k) : 0u,
                                ok0 ? load_pair(a0 + k + 8) : 0u, ok1 ? load_pair(a1 + k + 8) : 0u};
        const uint32_t bf[2] = {b_ok ? load_pair(b_row + k) : 0u, b_ok ? load_pair(b_row + k + 8) : 0u};
        mma_16x8x16<T>(d, af, bf);
      }
      store_tile(slab + mt * kTileM * kTileN, g, q, d);
    }
  } else if (tf32) {  // fp32 storage, TF32 tensor cores; warp-uniform branch
    const int g = lane / 4, q = lane % 4;
    const bool b_ok = g < nb;
    const T* b_row = b + g * s.ld + q;
    for (int64_t mt = 0; mt < s.m_tiles; ++mt) {
      const int64_t r0 = mt * kTileM + g, r1 = r0 + 8;
      const bool ok0 = r0 < s.rows, ok1 = r1 < s.rows;
      const T* a0 = a + r0 * s.ld + q;
      const T* a1 = a + r1 * s.ld + q;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t kt = warp; kt < k_tiles; kt += warps) {
        for (int64_t k = kt * kTileK; k < kt * kTileK + kTileK; k += 8) {  // two k8 steps per k-tile
          const uint32_t af[4] = {ok0 ? to_tf32(a0[k]) : 0u, ok1 ? to_tf32(a1[k]) : 0u,
                                  ok0 ? to_tf32(a0[k + 4]) : 0u, ok1 ? to_tf32(a1[k + 4]) : 0u};
          const uint32_t bf[2] = {b_ok ? to_tf32(b_row[k]) : 0u, b_ok ? to_tf32(b_row[k + 4]) : 0u};
          mma_16x8x8_tf32(d, af, bf);
        }
      }
      store_tile(slab + mt * kTileM * kTileN, g, q, d);
    }
  } else {
    // Lane -> row r = lane % 16 of the tile and columns n0, n0 + 2, n0 + 4, n0 + 6 (n0 = lane / 16).
    const int r = lane % kTileM, n0 = lane / kTileM;
    for (int64_t mt = 0; mt < s.m_tiles; ++mt) {
      const int64_t row = mt * kTileM + r;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      if (row < s.rows) {
        const T* a_row = a + row * s.ld;
        for (int64_t kt = warp; kt < k_tiles; kt += warps) {
          for (int64_t k = kt * kTileK; k < kt * kTileK + kTileK; ++k) {
            const float av = to_float(a_row[k]);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const int n = n0 + 2 * j;
              if (n < nb) acc[j] = fmaf(av, to_float(b[n * s.ld + k]), acc[j]);
            }
          }
        }
      }
      float* c = slab + mt * kTileM * kTileN;
#pragma unroll
      for (int j = 0; j < 4; ++j) c[r * kTileN + n0 + 2 * j] = acc[j];
    }
  }
}

// C[m][n]: the sum of the warps' shares.
__device__ __forceinline__ float partial_sum(const float* part, int64_t m_tiles, int64_t m, int64_t n) {
  const int warps = blockDim.x / 32;
  const int64_t slab = m_tiles * kTileM * kTileN;
  float sum = 0.f;
  for (int w = 0; w < warps; ++w) sum += part[w * slab + m * kTileN + n];
  return sum;
}

// Zero the pad columns [K, ld) of `rows` rows (once per kernel: staging never writes them).
template <typename T>
__device__ __forceinline__ void zero_pad_columns(T* m, int64_t rows, const ProductShape& s) {
  const int64_t pad = s.ld - s.k;
  for (int64_t i = threadIdx.x; i < rows * pad; i += blockDim.x) m[(i / pad) * s.ld + s.k + i % pad] = from_float<T>(0.f);
}

}  // namespace fastrnn
