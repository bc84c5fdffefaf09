// The floor of one persistent step: a cooperative kernel that does nothing but `iters`
// grid-wide barriers. Launched with the persistent kernels' block size (kThreads) and one block
// per SM, the time per barrier is what a step of forward.cuh / backward.cuh can never beat.
#pragma once

#include <cstdint>

#include "device.cuh"
#include "layout.cuh"

namespace fastrnn {

__global__ void __launch_bounds__(kThreads) empty_barriers_kernel(int64_t iters) {
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t i = 0; i < iters; ++i) grid.sync();
}

}  // namespace fastrnn
