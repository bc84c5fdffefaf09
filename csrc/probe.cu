// Host side of the build probe (see kernels/probe.cuh).
// c10's stream and guard headers, not ATen/cuda/CUDAContext.h: that one pulls in cuBLAS and
// cuSPARSE headers, which a bare CUDA toolkit (like CI's) may lack.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

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

}  // namespace fastrnn
