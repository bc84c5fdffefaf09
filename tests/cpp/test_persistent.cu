// GPU test of the persistent kernels (kernels/forward.cuh, kernels/backward.cuh) against a CPU
// loop in double, without PyTorch. Builds anywhere nvcc does; needs a GPU to run (exits 1 with
// a message otherwise). Checks every cell, forward and reverse, with per-sequence lengths
// (including 0), one unit per block (H <= SMs) and several (H = 200 on an H100's 132 SMs; H = 768,
// the target shape: 6 units a block), several batch passes per step, fp32,
// fp32 with TF32, bf16 and fp16, and NaN-poisoned outputs and work buffers: out, h_n, c_n, dgx,
// dghn, dh0, dc0. tests/cpp/test_persistent_emulated.cpp runs the same kernels on the CPU.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "backward.cuh"
#include "forward.cuh"
#include "cuda_check.h"
#include "persistent_reference.h"

namespace {

using fastrnn_test::compare;
using fastrnn_test::Problem;

template <typename T>
T* to_device(const std::vector<float>& host) {
  std::vector<T> conv(host.size());
  for (size_t i = 0; i < host.size(); ++i) conv[i] = fastrnn::from_float<T>(host[i]);
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(1, conv.size()) * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d, conv.data(), conv.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// A device buffer filled with NaN: an element the kernel forgets to write stays NaN.
template <typename T>
T* poisoned(size_t n) {
  return to_device<T>(std::vector<float>(n, NAN));
}

template <typename T>
std::vector<double> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  CHECK_CUDA(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = fastrnn::to_float(h[i]);
  return out;
}

// `max_tile` > 0 caps the batch rows per pass (a smaller shared-memory budget for the plan), so
// small batches also take several passes per step.
template <typename Kernel, typename Args>
void launch(Kernel kernel, Args args, int gates, int itemsize, bool backward, int max_tile) {
  int device = 0, sms = 0, smem = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK_CUDA(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  int64_t budget = smem;
  if (max_tile > 0) {
    const int64_t units = fastrnn::ceil_div(args.hidden, std::min<int64_t>(args.hidden, sms));
    budget = std::min<int64_t>(budget, fastrnn::smem_bytes(gates, itemsize, args.hidden, units, max_tile, backward));
  }
  const fastrnn::Plan plan = fastrnn::make_plan(gates, itemsize, args.hidden, args.batch, sms, budget, backward);
  if (plan.blocks == 0) {
    std::printf("FAIL: no plan\n");
    std::exit(1);
  }
  // The opt-in maximum, as csrc/launch.h sets it (once per kernel there).
  CHECK_CUDA(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  smem));
  int per_sm = 0;
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, reinterpret_cast<const void*>(kernel),
                                                           fastrnn::kThreads, plan.smem));
  if (per_sm * sms < plan.blocks) {
    std::printf("FAIL: %d blocks cannot be co-resident\n", plan.blocks);
    std::exit(1);
  }
  args.units = plan.units;
  args.batch_tile = plan.batch_tile;
  void* kargs[] = {&args};
  CHECK_CUDA(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(plan.blocks),
                                         dim3(fastrnn::kThreads), kargs, plan.smem, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
}

template <typename Cell, typename T>
void run_case(const char* name, int64_t TT, int64_t B, int64_t H, bool reverse, double tol, std::mt19937& rng,
              bool tf32 = false, int max_tile = 0) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int64_t GH = G * H;
  const Problem<Cell, T> p(TT, B, H, reverse, rng);
  const auto& lengths = p.lengths;

  // GPU.
  fastrnn::ForwardArgs<T> fa{};
  fa.gx = to_device<T>(p.gx);
  fa.w_hh = to_device<T>(p.w);
  fa.b_hn = to_device<T>(p.b_hn);
  fa.h0 = to_device<T>(p.h0);
  fa.c0 = to_device<T>(p.c0);
  int32_t* d_len = nullptr;
  CHECK_CUDA(cudaMalloc(&d_len, B * sizeof(int32_t)));
  CHECK_CUDA(cudaMemcpy(d_len, lengths.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice));
  fa.lengths = d_len;
  fa.out = poisoned<T>(TT * B * H);
  fa.h_n = poisoned<T>(B * H);
  fa.c_n = poisoned<T>(B * H);
  fa.saved = poisoned<float>(TT * B * S * H);
  fa.hx = poisoned<T>(2 * B * H);
  fa.hstate = poisoned<float>(B * H);
  fa.cbuf = poisoned<float>(B * H);
  fa.seq_len = TT;
  fa.batch = B;
  fa.hidden = H;
  fa.reverse = reverse;
  fa.tf32 = tf32;
  launch(fastrnn::persistent_forward_kernel<Cell, T>, fa, G, sizeof(T), false, max_tile);
  const std::string tag = p.tag(name) + (std::is_same_v<T, float> ? (tf32 ? " fp32/tf32" : " fp32") : " 16-bit") +
                          (max_tile > 0 ? " max_tile=" + std::to_string(max_tile) : "");
  compare(to_host(fa.out, TT * B * H), p.out, tol, tag + " out");
  compare(to_host(fa.h_n, B * H), p.h_n, tol, tag + " h_n");
  if (Cell::kHasCellState) compare(to_host(fa.c_n, B * H), p.c_n, tol, tag + " c_n");

  fastrnn::BackwardArgs<T> ba{};
  ba.dout = to_device<T>(p.dout);
  ba.dh_n = to_device<T>(p.dh_n);
  ba.dc_n = to_device<T>(p.dc_n);
  ba.w_hh = fa.w_hh;
  ba.saved = fa.saved;
  ba.lengths = d_len;
  ba.dgx = poisoned<T>(TT * B * GH);
  ba.dghn = poisoned<T>(TT * B * H);
  ba.dh0 = poisoned<T>(B * H);
  ba.dc0 = poisoned<T>(B * H);
  ba.dgbuf = poisoned<T>(2 * B * GH);
  ba.dhbuf = poisoned<float>(B * H);
  ba.dcbuf = poisoned<float>(B * H);
  ba.seq_len = TT;
  ba.batch = B;
  ba.hidden = H;
  ba.reverse = reverse;
  ba.tf32 = tf32;
  launch(fastrnn::persistent_backward_kernel<Cell, T>, ba, G, sizeof(T), true, max_tile);
  // Expected gradients from the kernel's own saved forward values (persistent_reference.h).
  const auto want = p.backward(to_host(fa.saved, TT * B * S * H));
  compare(to_host(ba.dgx, TT * B * GH), want.dgx, tol, tag + " dgx");
  if (Cell::kGruRecurrentBias) compare(to_host(ba.dghn, TT * B * H), want.dghn, tol, tag + " dghn");
  compare(to_host(ba.dh0, B * H), want.dh0, tol, tag + " dh0");
  if (Cell::kHasCellState) compare(to_host(ba.dc0, B * H), want.dc0, tol, tag + " dc0");
  // (device buffers are left to process exit)
}

template <typename Cell>
void run_cell(const char* name, std::mt19937& rng) {
  for (bool reverse : {false, true}) {
    run_case<Cell, float>(name, 7, 3, 40, reverse, 1e-4, rng);
    run_case<Cell, float>(name, 1, 1, 24, reverse, 1e-4, rng);
    run_case<Cell, float>(name, 4, 17, 200, reverse, 1e-4, rng);   // H > SMs on small GPUs: U > 1
    run_case<Cell, float>(name, 4, 17, 200, reverse, 5e-3, rng, /*tf32=*/true);
    run_case<Cell, __nv_bfloat16>(name, 5, 3, 40, reverse, 3e-2, rng);
    run_case<Cell, __half>(name, 5, 3, 40, reverse, 1e-2, rng);
    // The target shape's split (H=768: 6 units a block on 128 blocks of an H100/H200), several
    // batch passes per step (B=130: three balanced passes of 44 at most 64 rows; B=20 capped at
    // 8 rows: three passes of 7), lengths, both directions.
    run_case<Cell, __nv_bfloat16>(name, 3, 130, 768, reverse, 3e-2, rng);
    run_case<Cell, __nv_bfloat16>(name, 6, 20, 768, reverse, 3e-2, rng, false, 8);
    run_case<Cell, float>(name, 4, 20, 768, reverse, 1e-4, rng, false, 8);
  }
}

}  // namespace

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no usable GPU\n");
    return 1;
  }
  std::mt19937 rng(7);
  run_cell<fastrnn::ElmanTanhCell>("rnn_tanh", rng);
  run_cell<fastrnn::ElmanReluCell>("rnn_relu", rng);
  run_cell<fastrnn::LstmCell>("lstm", rng);
  run_cell<fastrnn::GruCell>("gru", rng);
  if (fastrnn_test::failures > 0) {
    std::printf("persistent kernels: %d failures\n", fastrnn_test::failures);
    return 1;
  }
  std::printf("persistent kernels: all cases ok\n");
  return 0;
}
