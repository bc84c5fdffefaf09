// Runs CUDA kernels written for kernels/ on the CPU, one std::thread per CUDA thread, so their
// orchestration (work split, barriers, double buffers, lengths, reverse) can be tested without a
// GPU. Include this before any kernels/ header and compile with a host compiler (C++20,
// -pthread, CUDA's include folder on the path for cuda_fp16.h / cuda_bf16.h).
//
// Emulated: threadIdx / blockIdx / blockDim / gridDim, __syncthreads() (a barrier per block),
// __shfl_xor_sync (a barrier per warp: every lane of a warp must call it, as on the GPU with a
// full mask), __ldcg (a plain load: std::barrier orders memory), cooperative_groups::this_grid()
// .sync() (a barrier over all threads), and the block's dynamic shared memory. Not emulated:
// timing, the memory model's weaker orderings (a missing fence that std::barrier happens to
// provide would go unnoticed), bank conflicts, occupancy.
#pragma once

#define FASTRNN_HOST_EMULATION 1

#include <cuda_bf16.h>  // also defines __host__, __device__, __global__, ... as nothing for g++
#include <cuda_fp16.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
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
  float values[32];
  std::barrier<> barrier{32};
};

struct Block {
  explicit Block(int threads, size_t smem_bytes)
      : smem(smem_bytes + 16), barrier(threads), warps(threads / 32) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::vector<unsigned char> smem;
  std::barrier<> barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* current_block = nullptr;
inline std::barrier<>* grid_barrier = nullptr;

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
      });
    }
  }
  for (auto& th : threads) th.join();
  grid_barrier = nullptr;
}

}  // namespace fastrnn_emu

inline void __syncthreads() { fastrnn_emu::current_block->barrier.arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  auto& warp = *fastrnn_emu::current_block->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  warp.values[lane] = v;
  warp.barrier.arrive_and_wait();
  const float other = warp.values[lane ^ static_cast<unsigned>(lane_mask)];
  warp.barrier.arrive_and_wait();
  return other;
}

inline float __ldcg(const float* p) { return *p; }

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
