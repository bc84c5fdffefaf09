// Device-side primitives of the persistent kernels: the dynamic shared memory and the grid group.
// Compiled by nvcc they are CUDA's own; with FASTRNN_HOST_EMULATION defined
// (tests/cpp/host_emulation.h, included first) the CPU supplies threadIdx, __syncthreads,
// mma.sync (mma.cuh), grid.sync() and the block's shared memory, so the kernels' orchestration
// can be tested without a GPU.
#pragma once

#if !defined(FASTRNN_HOST_EMULATION)
#include <cooperative_groups.h>
#endif

namespace fastrnn {

// A hint that moves no data the kernel can see: start bringing the bytes at `p` into L2, so a load
// issued later (after the grid barrier) finds them there instead of in HBM. A no-op on the CPU.
__device__ __forceinline__ void prefetch_l2(const void* p) {
#if !defined(FASTRNN_HOST_EMULATION) && defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

// Block-cooperative prefetch of `rows` segments of `span` bytes, row r starting at
// base + r * stride bytes: one hint per 32-byte sector, every address inside a segment.
__device__ __forceinline__ void prefetch_rows_l2(const void* base, int64_t rows, int64_t stride, int64_t span) {
  const int64_t sectors = (span + 31) / 32;
  const char* p = static_cast<const char*>(base);
  for (int64_t i = threadIdx.x; i < rows * sectors; i += blockDim.x) {
    prefetch_l2(p + (i / sectors) * stride + (i % sectors) * 32);
  }
}

#if !defined(FASTRNN_HOST_EMULATION)
// The block's dynamic shared memory (size given at launch).
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char fastrnn_dynamic_smem[];
  return fastrnn_dynamic_smem;
}
#endif

}  // namespace fastrnn
