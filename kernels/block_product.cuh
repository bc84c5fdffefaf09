// The recurrent product of one block and one batch tile, the only matrix work inside the
// persistent kernels (layout.cuh names the operands):
//     C[m][n] = sum_k A[m][k] * B[n][k]      m < M (block's rows), n < nb (<= batch tile), k < K
// A and B live in shared memory with row stride ld; their pad columns [K, ld) must hold zeros
// (the kernels zero them once). C is cut into 16 x 8 tiles (m-tile x n-tile, the mma shape); the
// K dimension is split over the block's warps: warp w takes the 16-wide k-tiles w, w + warps, ...
// for every C tile and writes its share to its own slab of `part`; partial_sum() adds the
// shares. Each A fragment is loaded once per k-tile and used for every n-tile; 16-bit fragments
// come from shared memory by ldmatrix (one instruction per A tile and per pair of B tiles). Rows
// m >= M and columns n >= nb of C are never read.
//   bf16 / fp16: mma.m16n8k16 on tensor cores, fp32 accumulation.
//   fp32 with tf32 = true (torch's matmul TF32 flag): two mma.m16n8k8.tf32 per k-tile.
//   fp32 otherwise: FMA on the CUDA cores (full fp32).
// Callers __syncthreads() between staging B, block_product() and reading the partials (or, with
// stage_own_k_tiles, only between block_product() and reading the partials: a warp reads only
// the k-tiles of B it staged itself).
#pragma once

#include <cstdint>

#include "device.cuh"
#include "dtype.cuh"
#include "layout.cuh"
#include "mma.cuh"

namespace fastrnn {

// Partials: one slab per warp, row-major (m_tiles*16) x pld fp32 (pld = partial_ld(batch tile)).
__device__ __forceinline__ float* partial_slab(float* part, int warp, const ProductShape& s, int64_t pld) {
  return part + static_cast<int64_t>(warp) * s.m_tiles * kTileM * pld;
}

// Stores one warp's 16x8 accumulator tile (fragment layout of mma.cuh) at c (row stride pld).
__device__ __forceinline__ void store_tile(float* c, int pld, int g, int q, const float (&d)[4]) {
  c[g * pld + 2 * q] = d[0];
  c[g * pld + 2 * q + 1] = d[1];
  c[(g + 8) * pld + 2 * q] = d[2];
  c[(g + 8) * pld + 2 * q + 1] = d[3];
}

// Where this lane's ldmatrix rows start (mma.cuh ldmatrix_x4; matrix i = lane / 8, row
// r = lane % 8). A, for m-tile mt: row mt*16 + r + 8*(i % 2), columns from 8*(i / 2): the
// a[0..3] order of the mma fragments. B, for the n-tile pair (nt, nt + 1): row (column of C)
// (nt + i / 2)*8 + r, columns from 8*(i % 2): b[0], b[1] of n-tile nt, then of nt + 1. Rows past
// M and past nb are clamped to the last valid one: their results are never read, and every
// load stays inside A or B (never in the partials, which other warps are writing).
__device__ __forceinline__ int ldmatrix_a_offset(int mt, int rows, int ld, int lane) {
  const int i = lane / 8, row = mt * kTileM + lane % 8 + 8 * (i % 2);
  return (row < rows ? row : rows - 1) * ld + 8 * (i / 2);
}

template <int NT>
__device__ __forceinline__ int ldmatrix_b_offset(int nt, int nbi, int ld, int lane) {
  const int i = lane / 8, tile = nt + i / 2 < NT ? nt + i / 2 : nt, n = tile * kTileN + lane % 8;
  return (n < nbi ? n : nbi - 1) * ld + 8 * (i % 2);
}

// One k-tile (16 deep) of a warp's C tiles on tensor cores, NT n-tiles accumulated into d.
// 16-bit: A and B fragments by ldmatrix from this lane's row offsets (a_off; b_off[nt / 2] for
// n-tile pair nt, nt + 1). fp32 on TF32: rows a0 / a1 (this lane's fragment rows; ok0 / ok1
// false past M: zeros) and B column g of each n-tile, converted element by element.
template <typename T, int NT>
__device__ __forceinline__ void mma_k_tile(const T* a, int a_off, const int (&b_off)[(NT + 1) / 2], const T* a0,
                                           const T* a1, bool ok0, bool ok1, const T* b, int ld, int nbi, int kt, int g,
                                           int q, float (&d)[NT][4]) {
  if constexpr (kTensorCoreType<T>) {
    uint32_t af[4];
    ldmatrix_x4(af, a + a_off + kt * kTileK);
#pragma unroll
    for (int nt = 0; nt < NT; nt += 2) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b + b_off[nt / 2] + kt * kTileK);
      const uint32_t b0[2] = {bf[0], bf[1]};
      mma_16x8x16<T>(d[nt], af, b0);
      if (nt + 1 < NT) {
        const uint32_t b1[2] = {bf[2], bf[3]};
        mma_16x8x16<T>(d[nt + 1], af, b1);
      }
    }
  } else {  // fp32 storage on TF32 tensor cores: two k8 steps
#pragma unroll
    for (int k = kt * kTileK + q; k < kt * kTileK + kTileK; k += 8) {
      const uint32_t af[4] = {ok0 ? to_tf32(a0[k]) : 0u, ok1 ? to_tf32(a1[k]) : 0u, ok0 ? to_tf32(a0[k + 4]) : 0u,
                              ok1 ? to_tf32(a1[k + 4]) : 0u};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int n = nt * kTileN + g;
        const bool b_ok = n < nbi;
        const uint32_t bf[2] = {b_ok ? to_tf32(b[n * ld + k]) : 0u, b_ok ? to_tf32(b[n * ld + k + 4]) : 0u};
        mma_16x8x8_tf32(d[nt], af, bf);
      }
    }
  }
}

// The tensor-core product with a compile-time count of n-tiles (NT = ceil(nb / 8)): no branch
// around each mma, and (NT <= 4) the warp's k-tiles alternate between two accumulator sets, so
// consecutive mma on one C tile do not wait for each other (an mma's result is ready only
// ~30 cycles after issue); the sets are added before the store.
template <typename T, int NT>
__device__ __forceinline__ void product_tensor_cores(const T* a, const T* b, int nbi, int rows, int m_tiles,
                                                     int k_tiles, int ld, int pldi, float* slab, int warp, int warps,
                                                     int g, int q) {
  constexpr bool kTwoChains = NT <= 4;
  const int lane = static_cast<int>(threadIdx.x % 32);
  int b_off[(NT + 1) / 2];
#pragma unroll
  for (int p = 0; p < (NT + 1) / 2; ++p) b_off[p] = ldmatrix_b_offset<NT>(2 * p, nbi, ld, lane);
  for (int mt = 0; mt < m_tiles; ++mt) {
    const int r0 = mt * kTileM + g, r1 = r0 + 8;
    const bool ok0 = r0 < rows, ok1 = r1 < rows;
    const T* a0 = a + r0 * ld;
    const T* a1 = a + r1 * ld;
    const int a_off = ldmatrix_a_offset(mt, rows, ld, lane);
    float d[NT][4] = {}, e[kTwoChains ? NT : 1][4] = {};
    int kt = warp;  // warp-uniform: every lane runs the mma
    if constexpr (kTwoChains) {
      for (; kt + warps < k_tiles; kt += 2 * warps) {
        mma_k_tile<T, NT>(a, a_off, b_off, a0, a1, ok0, ok1, b, ld, nbi, kt, g, q, d);
        mma_k_tile<T, NT>(a, a_off, b_off, a0, a1, ok0, ok1, b, ld, nbi, kt + warps, g, q, e);
      }
    }
    for (; kt < k_tiles; kt += warps) mma_k_tile<T, NT>(a, a_off, b_off, a0, a1, ok0, ok1, b, ld, nbi, kt, g, q, d);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if constexpr (kTwoChains) {
#pragma unroll
        for (int i = 0; i < 4; ++i) d[nt][i] += e[nt][i];
      }
      store_tile(slab + mt * kTileM * pldi + nt * kTileN, pldi, g, q, d[nt]);
    }
  }
}

template <typename T>
__device__ __forceinline__ void block_product(const T* a, const T* b, int64_t nb, const ProductShape& s, int64_t pld,
                                              float* part, bool tf32) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  // 32-bit offsets: everything indexed here lives in one block's shared memory (< 2^18 bytes).
  const int k_tiles = static_cast<int>(ceil_div(s.k, kTileK));
  const int n_tiles = static_cast<int>(ceil_div(nb, kTileN));  // <= kMaxNTiles (layout.cuh)
  const int ld = static_cast<int>(s.ld), rows = static_cast<int>(s.rows), m_tiles = static_cast<int>(s.m_tiles);
  const int nbi = static_cast<int>(nb), pldi = static_cast<int>(pld);
  float* slab = partial_slab(part, warp, s, pld);
  const int g = lane / 4, q = lane % 4;
  if (kTensorCoreType<T> || tf32) {  // tensor cores; block-uniform
    static_assert(kMaxNTiles == 8, "block_product dispatches n_tiles 1..8");
#define FASTRNN_PRODUCT(NT) \
  product_tensor_cores<T, NT>(a, b, nbi, rows, m_tiles, k_tiles, ld, pldi, slab, warp, warps, g, q)
    switch (n_tiles) {
      case 1: FASTRNN_PRODUCT(1); break;
      case 2: FASTRNN_PRODUCT(2); break;
      case 3: FASTRNN_PRODUCT(3); break;
      case 4: FASTRNN_PRODUCT(4); break;
      case 5: FASTRNN_PRODUCT(5); break;
      case 6: FASTRNN_PRODUCT(6); break;
      case 7: FASTRNN_PRODUCT(7); break;
      default: FASTRNN_PRODUCT(8); break;
    }
#undef FASTRNN_PRODUCT
    return;
  }
  // fp32 FMA: lane -> row r = lane % 16 of the tile and columns n0, n0 + 2, n0 + 4, n0 + 6 of
  // each n-tile (n0 = lane / 16).
  const int r = lane % kTileM, n0 = lane / kTileM;
  for (int64_t mt = 0; mt < s.m_tiles; ++mt) {
    const int64_t row = mt * kTileM + r;
    for (int nt = 0; nt < n_tiles; ++nt) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      if (row < s.rows) {
        const T* a_row = a + row * s.ld;
        for (int64_t kt = warp; kt < k_tiles; kt += warps) {
          for (int64_t k = kt * kTileK; k < kt * kTileK + kTileK; ++k) {
            const float av = to_float(a_row[k]);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const int64_t n = nt * kTileN + n0 + 2 * j;
              if (n < nb) acc[j] = fmaf(av, to_float(b[n * s.ld + k]), acc[j]);
            }
          }
        }
      }
      float* c = slab + mt * kTileM * pld + nt * kTileN;
#pragma unroll
      for (int j = 0; j < 4; ++j) c[r * pld + n0 + 2 * j] = acc[j];
    }
  }
}

// C[m][n]: the sum of the warps' shares.
__device__ __forceinline__ float partial_sum(const float* part, const ProductShape& s, int64_t pld, int64_t m,
                                             int64_t n) {
  const int warps = blockDim.x / 32;
  const int64_t slab = s.m_tiles * kTileM * pld;
  const float* p = part + m * pld + n;
  float sum = 0.f;
#pragma unroll 8
  for (int w = 0; w < warps; ++w) sum += p[w * slab];  // kWarps (8) at launch: one unrolled pass
  return sum;
}

// Copies `rows` rows of K = s.k elements from global memory (row stride K, read from L2 past L1:
// other blocks wrote them) into shared memory (row stride s.ld). 16 bytes per copy where K and
// the source address allow it (every row then starts 16-byte aligned on both sides: ld*itemsize
// is a multiple of 16, layout.cuh), else one element per load. The 16-byte copies are cp.async:
// a thread issues all of its copies (the target shape: 6 per thread forward, 24 backward)
// without waiting on any, so their L2 round trips overlap, and they land in shared memory
// without passing through registers; it waits for them before returning (the caller's
// __syncthreads() then covers the block). Each thread walks its elements tid, tid + threads, ...
// with a FlatWalk (layout.cuh): no division per element. Offsets are 32-bit: a staged tile is
// at most kMaxBatchTile rows of G*H elements.
template <typename T>
__device__ __forceinline__ void stage_rows(T* dst, const T* src, int64_t rows, const ProductShape& s) {
  constexpr int kVec = 16 / sizeof(T);
  const int k = static_cast<int>(s.k), ld = static_cast<int>(s.ld);
  const int threads = static_cast<int>(blockDim.x), tid = static_cast<int>(threadIdx.x);
  if (can_stage_vectors(src, s)) {
    // In units of 16-byte vectors: rows of k / kVec vectors, padded rows of ld / kVec.
    const int total = static_cast<int>(rows) * (k / kVec);
    FlatWalk w(tid, threads, k / kVec, ld / kVec);
    for (int i = tid; i < total; i += threads, w.next()) cp_async16_cg(dst + w.pad * kVec, src + i * kVec);
    cp_async_wait_all();
  } else {
    const int total = static_cast<int>(rows) * k;
    FlatWalk w(tid, threads, k, ld);
    for (int i = tid; i < total; i += threads, w.next()) dst[w.pad] = __ldcg(src + i);
  }
}

// Whether stage_rows / stage_own_k_tiles may copy 16 bytes at a time from `src` (block-uniform):
// rows of K elements start 16-byte aligned when K is a multiple of the vector and src is.
template <typename T>
__device__ __forceinline__ bool can_stage_vectors(const T* src, const ProductShape& s) {
  return s.k % (16 / static_cast<int64_t>(sizeof(T))) == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0;
}

// Warp-local staging (where can_stage_vectors holds): warp w copies only the k-tiles it
// multiplies in block_product (w, w + warps, ...), for all `rows` rows, then waits for its own
// copies (cp.async.wait_all) and syncs its lanes (__syncwarp orders their shared-memory writes
// for the warp). No block barrier between staging and product: each warp starts its product as
// its own copies land, while others are still copying. The same number of copies per thread as
// stage_rows in the target shape (16 rows x 2 vectors x 6 k-tiles = 6 per lane, bf16).
// Columns past K (the last k-tile's tail) are the zero pad, never copied.
template <typename T>
__device__ __forceinline__ void stage_own_k_tiles(T* dst, const T* src, int64_t rows, const ProductShape& s) {
  constexpr int kVec = 16 / sizeof(T), kPerTile = kTileK / kVec;  // 16-byte vectors per k-tile row
  const int k = static_cast<int>(s.k), ld = static_cast<int>(s.ld);
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int warps = static_cast<int>(blockDim.x / 32);
  const int items = static_cast<int>(rows) * kPerTile;  // (row, vector) pairs of one k-tile
  // Lane -> (row, vector) once (the target shape: 32 pairs, one per lane), then along the row
  // from k-tile to k-tile: a compare, two address steps and the copy per 16 bytes.
  const int step = warps * kTileK;
  for (int i = lane; i < items; i += 32) {
    const int row = i / kPerTile, c0 = warp * kTileK + (i % kPerTile) * kVec;  // kPerTile: a power of 2
    const T* from = src + row * k + c0;
    T* to = dst + row * ld + c0;
    for (int col = c0; col < k; col += step, from += step, to += step) cp_async16_cg(to, from);
  }
  cp_async_wait_all();
  __syncwarp();
}

// Zero the pad columns [K, ld) of `rows` rows (once per kernel: staging never writes them).
template <typename T>
__device__ __forceinline__ void zero_pad_columns(T* m, int64_t rows, const ProductShape& s) {
  const int64_t pad = s.ld - s.k;
  for (int64_t i = threadIdx.x; i < rows * pad; i += blockDim.x) {
    m[(i / pad) * s.ld + s.k + i % pad] = from_float<T>(0.f);
  }
}

}  // namespace fastrnn
