// CHECK_CUDA(call): a CUDA runtime call that must succeed, else print where and exit(1).
// For the stand-alone GPU programs (tests/cpp/*.cu, bench/kernel_timing.cu); the extension uses
// TORCH_CHECK instead.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CHECK_CUDA(call)                                                                    \
  do {                                                                                      \
    cudaError_t err_ = (call);                                                              \
    if (err_ != cudaSuccess) {                                                              \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(err_), __FILE__, __LINE__); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)
