// Build probe: the smallest device code that proves kernels/ + csrc/ compile, link and launch.
// Real kernels (persistent forward/backward per cell) will live beside it as header-only
// templates over cell and dtype, with no PyTorch includes.
#pragma once

#include <cstdint>

namespace fastrnn {

// out[i] = i for i < n; grid-stride loop so any grid size is correct.
template <typename T>
__global__ void iota_kernel(T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = static_cast<T>(i);
  }
}

}  // namespace fastrnn
