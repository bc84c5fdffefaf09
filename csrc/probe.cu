// Host side of the build probe (see kernels/probe.cuh).
// c10's stream and guard headers, not ATen/cuda/CUDAContext.h: that one pulls in cuBLAS and
// cuSPARSE headers, which a bare CUDA toolkit (like CI's) may lack.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "barrier_probe.cuh"
#include "launch.h"
#include "probe.cuh"

namespace fastrnn {

void probe_iota(torch::Tensor out) {
  TORCH_CHECK(out.is_cuda(), "probe_iota: expected a CUDA tensor, got one on ", out.device());
  TORCH_CHECK(out.scalar_type() == torch::kFloat32, "probe_iota: expected float32, got ", out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "probe_iota: expected a contiguous tensor");
  const int64_t n = out.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  iota_kernel<float><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(out.data_ptr<float>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// `iters` empty grid-wide barriers over `blocks` blocks of kThreads threads, one cooperative
// launch on the current stream of `device` (the caller times it with CUDA events).
void empty_barriers(int64_t iters, int64_t blocks, int64_t device) {
  TORCH_CHECK(iters >= 0, "empty_barriers: iters must be >= 0, got ", iters);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const DeviceLimits limits = device_limits(static_cast<int>(device));
  TORCH_CHECK(limits.cooperative, "empty_barriers: GPU ", device, " does not support cooperative launches");
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, reinterpret_cast<const void*>(empty_barriers_kernel), kThreads, 0));
  const int64_t resident = static_cast<int64_t>(per_sm) * limits.num_sms;
  TORCH_CHECK(blocks >= 1 && blocks <= resident, "empty_barriers: blocks must be in [1, ", resident,
              "] (all resident at once), got ", blocks);
  void* args[] = {&iters};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(empty_barriers_kernel),
                                             dim3(static_cast<unsigned>(blocks)), dim3(kThreads), args, 0, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastrnn
