// C++ test of kernels/probe.cuh against a CPU loop. Needs a GPU to run.
#include <cstdio>
#include <vector>

#include "probe.cuh"

int main() {
  const int64_t n = 1000003;  // not a multiple of the block size
  float* device = nullptr;
  if (cudaMalloc(&device, n * sizeof(float)) != cudaSuccess) {
    std::printf("no usable GPU\n");
    return 1;
  }
  fastrnn::iota_kernel<float><<<64, 256>>>(device, n);
  std::vector<float> host(n);
  cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(device);
  for (int64_t i = 0; i < n; ++i) {
    if (host[i] != static_cast<float>(i)) {
      std::printf("mismatch at %lld: %f\n", static_cast<long long>(i), host[i]);
      return 1;
    }
  }
  std::printf("probe: %lld values ok\n", static_cast<long long>(n));
  return 0;
}
