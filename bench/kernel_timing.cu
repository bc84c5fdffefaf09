// Kernel-only timings of the CUDA persistent kernels (kernels/forward.cuh, kernels/backward.cuh)
// without PyTorch: where a step's time goes, for bench/GPU_CHECK.md.
//
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Ikernels bench/kernel_timing.cu \
//        -o kernel_timing && ./kernel_timing [results.jsonl]
//
// In order of value (a timeout keeps what finished): LSTM B=16 T=1024 H=768 bf16 (the issue's
// target), LSTM B=256 T=1024 H=1024 bf16, the block-count sweep, then GRU and Elman at the
// target shape. For each shape it times, with CUDA events, median of 15 after 3 warm-ups, on
// random inputs (never zeros) rotated over 2 sets:
//   empty      `T` empty grid.sync() over the same number of blocks (the floor of a step)
//   full       the real kernel
//   no_prefetch / no_staging / no_product   the kernel with that part dropped (layout.cuh
//              kVariant*: results wrong, time informative)
// The sweep times `empty` and `full` of the target shape on exactly 32, 48, 64, 96 and 132 (or
// the SM count) blocks (plan_for_blocks: more units per block, fewer blocks reading the
// exchanged h / dgates through L2): the data that checks the units per block of each direction
// (layout.cuh kPreferredBlocks*, bench/cuda_expectations.md).
// It prints us per step for each, forward and backward. One JSON object per line goes to the
// file named on the command line (appended as it goes), with "max_blocks" (0: no cap).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backward.cuh"
#include "barrier_probe.cuh"
#include "cuda_check.h"
#include "forward.cuh"

namespace {

template <typename T>
__global__ void fill_random(T* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    p[i] = fastrnn::from_float<T>(scale * (static_cast<float>(x) / 4294967296.0f * 2.f - 1.f));
  }
}

template <typename T>
T* random_buffer(int64_t n, uint32_t seed, float scale) {
  T* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)));
  fill_random<<<1024, 256>>>(p, n, seed, scale);
  CHECK_CUDA(cudaGetLastError());
  return p;
}


template <typename F>
float median_ms(F&& run, int warmup = 3, int repeats = 15) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) run(i);
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    run(i);
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float v = 0;
    CHECK_CUDA(cudaEventElapsedTime(&v, start, stop));
    ms.push_back(v);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

template <typename Kernel, typename Args>
void launch(Kernel kernel, Args args, const fastrnn::Plan& plan) {
  args.units = plan.units;
  args.batch_tile = plan.batch_tile;
  void* kargs[] = {&args};
  CHECK_CUDA(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(plan.blocks),
                                         dim3(fastrnn::kThreads), kargs, plan.smem, 0));
  CHECK_CUDA(cudaGetLastError());
}

FILE* results = nullptr;

void record(const char* cell, int64_t T, int64_t B, int64_t H, const char* pass, const char* variant, float ms,
            const fastrnn::Plan& plan, int max_blocks) {
  const double us_step = ms * 1e3 / T;
  std::printf("%-8s B=%-4ld T=%-5ld H=%-5ld %-8s %-12s %9.3f ms %8.3f us/step  (blocks=%d units=%d tile=%d smem=%ld cap=%d)\n",
              cell, long(B), long(T), long(H), pass, variant, ms, us_step, plan.blocks, plan.units, plan.batch_tile,
              long(plan.smem), max_blocks);
  if (results != nullptr) {
    std::fprintf(results,
                 "{\"cell\": \"%s\", \"batch\": %ld, \"seq_len\": %ld, \"hidden\": %ld, \"dtype\": \"bfloat16\", "
                 "\"pass\": \"%s\", \"variant\": \"%s\", \"median_ms\": %.5f, \"us_per_step\": %.4f, "
                 "\"blocks\": %d, \"units\": %d, \"batch_tile\": %d, \"smem\": %ld, \"max_blocks\": %d}\n",
                 cell, long(B), long(T), long(H), pass, variant, ms, us_step, plan.blocks, plan.units,
                 plan.batch_tile, long(plan.smem), max_blocks);
    std::fflush(results);
  }
}

// max_blocks > 0 caps the plan's blocks (as if the GPU had that many SMs); all_variants = false
// times only `empty` and `full`.
template <typename Cell>
void time_shape(const char* name, int64_t T, int64_t B, int64_t H, int max_blocks = 0, bool all_variants = true) {
  using T16 = __nv_bfloat16;
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  int device = 0, sms = 0, smem = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK_CUDA(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  // The launcher's plan (make_plan: the preferred blocks per direction), or exactly max_blocks.
  const fastrnn::Plan fplan = max_blocks > 0 ? fastrnn::plan_for_blocks(G, 2, H, B, std::min(max_blocks, sms), smem, false)
                                             : fastrnn::make_plan(G, 2, H, B, sms, smem, false);
  const fastrnn::Plan bplan = max_blocks > 0 ? fastrnn::plan_for_blocks(G, 2, H, B, std::min(max_blocks, sms), smem, true)
                                             : fastrnn::make_plan(G, 2, H, B, sms, smem, true);
  if (fplan.blocks == 0 || bplan.blocks == 0) {
    std::printf("%s H=%ld: does not fit\n", name, long(H));
    return;
  }
  auto* fk = &fastrnn::persistent_forward_kernel<Cell, T16>;
  auto* bk = &fastrnn::persistent_backward_kernel<Cell, T16>;
  CHECK_CUDA(cudaFuncSetAttribute(reinterpret_cast<const void*>(fk), cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  CHECK_CUDA(cudaFuncSetAttribute(reinterpret_cast<const void*>(bk), cudaFuncAttributeMaxDynamicSharedMemorySize, smem));

  // Two input sets, rotated, so repeated runs do not find the previous run's inputs in L2.
  fastrnn::ForwardArgs<T16> fa[2]{};
  fastrnn::BackwardArgs<T16> ba[2]{};
  std::vector<int32_t> lengths(B, static_cast<int32_t>(T));
  int32_t* d_len = nullptr;
  CHECK_CUDA(cudaMalloc(&d_len, B * sizeof(int32_t)));
  CHECK_CUDA(cudaMemcpy(d_len, lengths.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice));
  T16* w = random_buffer<T16>(G * H * H, 7, 1.5f / std::sqrt(float(H)));
  for (int r = 0; r < 2; ++r) {
    auto& f = fa[r];
    f.gx = random_buffer<T16>(T * B * G * H, 11 + r, 1.f);
    f.w_hh = w;
    f.b_hn = random_buffer<T16>(H, 13 + r, 0.5f);
    f.h0 = random_buffer<T16>(B * H, 17 + r, 1.f);
    f.c0 = random_buffer<T16>(B * H, 19 + r, 1.f);
    f.lengths = d_len;
    f.out = random_buffer<T16>(T * B * H, 23, 1.f);
    f.h_n = random_buffer<T16>(B * H, 29, 1.f);
    f.c_n = random_buffer<T16>(B * H, 31, 1.f);
    f.saved = random_buffer<float>(T * B * S * H, 37 + r, 1.f);
    f.hx = random_buffer<T16>(2 * B * H, 41, 1.f);
    f.hstate = random_buffer<float>(B * H, 43, 1.f);
    f.cbuf = random_buffer<float>(B * H, 47, 1.f);
    f.seq_len = T;
    f.batch = B;
    f.hidden = H;
    auto& b = ba[r];
    b.dout = random_buffer<T16>(T * B * H, 53 + r, 1.f);
    b.dh_n = random_buffer<T16>(B * H, 59 + r, 1.f);
    b.dc_n = random_buffer<T16>(B * H, 61 + r, 1.f);
    b.w_hh = w;
    b.saved = f.saved;
    b.lengths = d_len;
    b.dgx = random_buffer<T16>(T * B * G * H, 67, 1.f);
    b.dghn = random_buffer<T16>(T * B * H, 71, 1.f);
    b.dh0 = random_buffer<T16>(B * H, 73, 1.f);
    b.dc0 = random_buffer<T16>(B * H, 79, 1.f);
    b.dgbuf = random_buffer<T16>(2 * B * G * H, 83, 1.f);
    b.dhbuf = random_buffer<float>(B * H, 89, 1.f);
    b.dcbuf = random_buffer<float>(B * H, 97, 1.f);
    b.seq_len = T;
    b.batch = B;
    b.hidden = H;
  }
  CHECK_CUDA(cudaDeviceSynchronize());

  for (const fastrnn::Plan* plan : {&fplan, &bplan}) {
    int64_t iters = T;
    void* kargs[] = {&iters};
    const float ms = median_ms([&](int) {
      CHECK_CUDA(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(fastrnn::empty_barriers_kernel),
                                             dim3(plan->blocks), dim3(fastrnn::kThreads), kargs, 0, 0));
    });
    record(name, T, B, H, plan == &fplan ? "forward" : "backward", "empty", ms, *plan, max_blocks);
  }
  const std::pair<const char*, uint32_t> variants[] = {
      {"full", 0u},
      {"no_prefetch", fastrnn::kVariantNoPrefetch},
      {"no_staging", fastrnn::kVariantSkipStaging},
      {"no_product", fastrnn::kVariantSkipProduct},
      {"block_staging", fastrnn::kVariantBlockStaging},
  };
  const int n_variants = all_variants ? 5 : 1;
  for (int v = 0; v < n_variants; ++v) {
    const uint32_t flags = variants[v].second;
    const float ms = median_ms([&](int i) {
      auto args = fa[i % 2];
      args.variant = flags;
      launch(fk, args, fplan);
    });
    record(name, T, B, H, "forward", variants[v].first, ms, fplan, max_blocks);
  }
  for (int v = 0; v < n_variants; ++v) {
    const uint32_t flags = variants[v].second;
    const float ms = median_ms([&](int i) {
      auto args = ba[i % 2];
      args.variant = flags;
      launch(bk, args, bplan);
    });
    record(name, T, B, H, "backward", variants[v].first, ms, bplan, max_blocks);
  }
  // (device buffers are left to process exit)
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no usable GPU\n");
    return 1;
  }
  if (argc > 1) results = std::fopen(argv[1], "a");
  time_shape<fastrnn::LstmCell>("lstm", 1024, 16, 768);
  time_shape<fastrnn::LstmCell>("lstm", 1024, 256, 1024);
  for (int cap : {32, 48, 64, 96, 132}) time_shape<fastrnn::LstmCell>("lstm", 1024, 16, 768, cap, false);
  time_shape<fastrnn::GruCell>("gru", 1024, 16, 768);
  time_shape<fastrnn::ElmanTanhCell>("rnn_tanh", 1024, 16, 768);
  if (results != nullptr) std::fclose(results);
  return 0;
}
