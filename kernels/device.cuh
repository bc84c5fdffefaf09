// Device-side primitives of the persistent kernels: warp reduction, the dynamic shared memory
// and the grid group. Compiled by nvcc they are CUDA's own; with FASTRNN_HOST_EMULATION defined
// (tests/cpp/host_emulation.h, included first) the CPU supplies threadIdx, __syncthreads,
// __shfl_xor_sync, grid.sync() and the block's shared memory, so the kernels' orchestration can
// be tested without a GPU.
#pragma once

#if !defined(FASTRNN_HOST_EMULATION)
#include <cooperative_groups.h>
#endif

namespace fastrnn {

// Sum over the 32 lanes of a warp; every lane gets the total. All 32 lanes must call it.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

#if !defined(FASTRNN_HOST_EMULATION)
// The block's dynamic shared memory (size given at launch).
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char fastrnn_dynamic_smem[];
  return fastrnn_dynamic_smem;
}
#endif

}  // namespace fastrnn
