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

#if !defined(FASTRNN_HOST_EMULATION)
// The block's dynamic shared memory (size given at launch).
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char fastrnn_dynamic_smem[];
  return fastrnn_dynamic_smem;
}
#endif

}  // namespace fastrnn
