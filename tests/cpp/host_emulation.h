// Runs CUDA kernels written for kernels/ on the CPU, one std::thread per CUDA thread, so their
// orchestration (work split, barriers, double buffers, lengths, reverse) can be tested without a
// GPU. Include this before any kernels/ header and compile with a host compiler (C++20,
// -pthread, CUDA's include folder on the path for cuda_fp16.h / cuda_bf16.h).
//
// Emulated: threadIdx / blockIdx / blockDim / gridDim, __syncthreads() (a barrier per block),
// __syncwarp() (a barrier per warp),
// mma.sync m16n8k16 and m16n8k8.tf32 and ldmatrix.x4 (fastrnn_emu::mma_*, ldmatrix_x4: the lanes of a warp exchange their fragments
// through a barrier per warp, so every lane must call it, as on the GPU; the fragment layout is
// the PTX ISA's, restated in kernels/mma.cuh), __ldcg (a plain load: std::barrier orders memory),
// cooperative_groups::this_grid().sync() (a barrier over all threads), prefetch.global.L2 (the
// address is recorded for the tests, nothing is fetched), cp.async (deferred until the thread's
// wait: data read before it is the poison), and the block's dynamic
// shared memory, filled with NaN bytes at launch so a read of something never written shows.
// Not emulated: timing, the memory model's weaker orderings (a missing fence that std::barrier
// happens to provide would go unnoticed), bank conflicts, occupancy, the tensor cores' own
// summation order (the emulation sums in fp32, k ascending).
#pragma once

#define FASTRNN_HOST_EMULATION 1

#include <cuda_bf16.h>  // also defines __host__, __device__, __global__, ... as nothing for g++
#include <cuda_fp16.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct EmuDim {
  unsigned x = 0, y = 0, z = 0;
};

#if !defined(__launch_bounds__)
#define __launch_bounds__(...)
#endif

inline thread_local EmuDim threadIdx, blockIdx, blockDim, gridDim;

namespace fastrnn_emu {

struct Warp {
  uint32_t a[32][4];  // each lane's mma fragments
  uint32_t b[32][2];
  const void* rows[32];  // each lane's ldmatrix row address
  std::barrier<> barrier{32};
};

struct Block {
  explicit Block(int threads, size_t smem_bytes)
      : smem(smem_bytes + 16, 0xFF), barrier(threads), warps(threads / 32) {  // 0xFF..: NaN in fp32/bf16/fp16
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::vector<unsigned char> smem;
  std::barrier<> barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* current_block = nullptr;

// Addresses passed to prefetch_l2 (kernels/device.cuh) while `prefetch_log` is set.
inline std::mutex prefetch_mutex;
inline std::vector<const void*>* prefetch_log = nullptr;
inline void record_prefetch(const void* p) {
  const std::lock_guard<std::mutex> lock(prefetch_mutex);
  if (prefetch_log != nullptr) prefetch_log->push_back(p);
}
inline std::barrier<>* grid_barrier = nullptr;
// cp.async (kernels/device.cuh cp_async16_cg): each thread's copies wait in a queue until its
// cp_async_wait_all(), as the hardware may complete them any time before that: a kernel that
// reads the destination before waiting reads the NaN-filled shared memory. A copy still pending
// when the thread ends is an error (counted in cp_async_lost).
struct PendingCopy {
  void* dst;
  const void* src;
};
inline thread_local std::vector<PendingCopy> pending_copies;
inline std::atomic<int> cp_async_lost{0};
inline void cp_async16(void* dst, const void* src) { pending_copies.push_back({dst, src}); }
inline void cp_async_wait_all() {
  for (const PendingCopy& c : pending_copies) std::memcpy(c.dst, c.src, 16);
  pending_copies.clear();
}


// Runs kernel(args) on grid x block threads; blocks must be a multiple of 32 threads.
template <typename Kernel, typename Args>
void launch(Kernel kernel, int grid, int block, size_t smem_bytes, const Args& args) {
  std::barrier<> grid_sync(static_cast<std::ptrdiff_t>(grid) * block);
  grid_barrier = &grid_sync;
  std::vector<std::unique_ptr<Block>> blocks;
  for (int b = 0; b < grid; ++b) blocks.push_back(std::make_unique<Block>(block, smem_bytes));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(grid) * block);
  for (int b = 0; b < grid; ++b) {
    for (int t = 0; t < block; ++t) {
      threads.emplace_back([&, b, t] {
        threadIdx = {static_cast<unsigned>(t), 0, 0};
        blockIdx = {static_cast<unsigned>(b), 0, 0};
        blockDim = {static_cast<unsigned>(block), 1, 1};
        gridDim = {static_cast<unsigned>(grid), 1, 1};
        current_block = blocks[b].get();
        kernel(args);
        if (!pending_copies.empty()) ++cp_async_lost;
        pending_copies.clear();
      });
    }
  }
  for (auto& th : threads) th.join();
  grid_barrier = nullptr;
}

}  // namespace fastrnn_emu

inline void __syncthreads() { fastrnn_emu::current_block->barrier.arrive_and_wait(); }
// The calling warp's barrier (every lane calls it, as kernels/ does: full mask only).
inline void __syncwarp(unsigned = 0xffffffffu) {
  fastrnn_emu::current_block->warps[threadIdx.x / 32]->barrier.arrive_and_wait();
}

namespace fastrnn_emu {

template <typename T>
float half_to_float(uint32_t bits16) {
  const uint16_t h = static_cast<uint16_t>(bits16);
  T v;
  std::memcpy(static_cast<void*>(&v), &h, sizeof(v));
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return __half2float(v);
  }
}

// D (16x8) += A (16x16) . B (16x8) for the calling warp; a, b, d are this lane's fragments.
template <typename T>
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  auto& warp = *current_block->warps[threadIdx.x / 32];
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int i = 0; i < 4; ++i) warp.a[lane][i] = a[i];
  for (int i = 0; i < 2; ++i) warp.b[lane][i] = b[i];
  warp.barrier.arrive_and_wait();
  // Rebuild the whole A and B from all lanes' fragments (layout: kernels/mma.cuh).
  float am[16][16], bm[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i % 2) * 8, col = 2 * q + (i / 2) * 8;
      am[row][col] = half_to_float<T>(warp.a[l][i] & 0xFFFFu);
      am[row][col + 1] = half_to_float<T>(warp.a[l][i] >> 16);
    }
    for (int i = 0; i < 2; ++i) {
      const int k = 2 * q + i * 8;
      bm[k][g] = half_to_float<T>(warp.b[l][i] & 0xFFFFu);
      bm[k + 1][g] = half_to_float<T>(warp.b[l][i] >> 16);
    }
  }
  warp.barrier.arrive_and_wait();  // every lane has read the fragments before they are reused
  const int g = lane / 4, q = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i / 2) * 8, col = 2 * q + i % 2;
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += am[row][k] * bm[k][col];
    d[i] = acc;
  }
}

// ldmatrix .x4 (kernels/mma.cuh) for the calling warp: lane 8*i + r names row r of matrix i;
// each lane gets row lane / 4, columns 2 * (lane % 4) and + 1 of every matrix.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  auto& warp = *current_block->warps[threadIdx.x / 32];
  const int lane = static_cast<int>(threadIdx.x % 32);
  warp.rows[lane] = row;
  warp.barrier.arrive_and_wait();
  for (int i = 0; i < 4; ++i) {
    const auto* src = static_cast<const unsigned char*>(warp.rows[8 * i + lane / 4]);
    std::memcpy(&r[i], src + 4 * (lane % 4), 4);
  }
  warp.barrier.arrive_and_wait();  // every lane has read the addresses before they are reused
}

// fp32 -> TF32 bits as cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away.
inline uint32_t to_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7F800000u) == 0x7F800000u) return bits;  // inf / NaN unchanged
  return (bits + 0x1000u) & 0xFFFFE000u;
}

inline float tf32_value(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// D (16x8) += A (16x8) . B (8x8) in TF32 for the calling warp (layout: kernels/mma.cuh).
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  auto& warp = *current_block->warps[threadIdx.x / 32];
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int i = 0; i < 4; ++i) warp.a[lane][i] = a[i];
  for (int i = 0; i < 2; ++i) warp.b[lane][i] = b[i];
  warp.barrier.arrive_and_wait();
  float am[16][8], bm[8][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    for (int i = 0; i < 4; ++i) am[g + (i % 2) * 8][q + (i / 2) * 4] = tf32_value(warp.a[l][i] & 0xFFFFE000u);
    for (int i = 0; i < 2; ++i) bm[q + i * 4][g] = tf32_value(warp.b[l][i] & 0xFFFFE000u);
  }
  warp.barrier.arrive_and_wait();
  const int g = lane / 4, q = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i / 2) * 8, col = 2 * q + i % 2;
    float acc = d[i];
    for (int k = 0; k < 8; ++k) acc += am[row][k] * bm[k][col];
    d[i] = acc;
  }
}

}  // namespace fastrnn_emu

template <typename T>
T __ldcg(const T* p) {
  return *p;
}

namespace cooperative_groups {
struct grid_group {
  void sync() { fastrnn_emu::grid_barrier->arrive_and_wait(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

namespace fastrnn {
inline unsigned char* dynamic_smem() {
  auto& smem = fastrnn_emu::current_block->smem;
  const auto addr = reinterpret_cast<std::uintptr_t>(smem.data());
  return smem.data() + ((16 - addr % 16) % 16);
}
}  // namespace fastrnn
