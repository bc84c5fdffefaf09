// Host-side helpers shared by rnn_forward.cu and rnn_backward.cu: tensor checks, dtype and cell
// dispatch, launch plan from device properties, co-residency check, cooperative launch.
// c10 headers only (not ATen/cuda/CUDAContext.h, which needs cuBLAS/cuSPARSE headers).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/extension.h>

#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <type_traits>

#include "cell_math.cuh"
#include "dtype.cuh"
#include "layout.cuh"

namespace fastrnn {

// Calls f(Cell{}) for the run-time cell id: the one switch over cell ids on the host.
template <typename F>
void dispatch_cell(int64_t cell, const char* fn, F&& f) {
  switch (cell) {
    case kRnnTanh: f(ElmanTanhCell{}); break;
    case kRnnRelu: f(ElmanReluCell{}); break;
    case kLstm: f(LstmCell{}); break;
    case kGru: f(GruCell{}); break;
    default: TORCH_CHECK(false, fn, ": unknown cell id ", cell, " (0 rnn_tanh, 1 rnn_relu, 2 lstm, 3 gru)");
  }
}

// What the host code needs to know of a cell, read from its traits (kernels/cell_math.cuh).
struct CellInfo {
  const char* name;
  int gates;                // Cell::kGates: gate blocks in W_ih / W_hh rows
  int saved;                // Cell::kSaved: fp32 values per unit and step saved for the backward
  bool has_cell_state;      // Cell::kHasCellState: the LSTM's c
  bool gru_recurrent_bias;  // Cell::kGruRecurrentBias: b_hn goes to the kernel
};

template <typename Cell>
constexpr CellInfo cell_info_of() {
  return {Cell::kName, Cell::kGates, Cell::kSaved, Cell::kHasCellState, Cell::kGruRecurrentBias};
}

inline CellInfo cell_info(int64_t cell, const char* fn) {
  CellInfo info{};
  dispatch_cell(cell, fn, [&](auto tag) { info = cell_info_of<decltype(tag)>(); });
  return info;
}

// Test hook (fastrnn._C.set_poison): fill every buffer the kernels must write completely with
// NaN before the launch, so an element a kernel forgets to write shows up as NaN.
inline bool& poison_flag() {
  static bool flag = false;
  return flag;
}

inline torch::Tensor new_buffer(c10::IntArrayRef shape, const torch::TensorOptions& options) {
  auto t = torch::empty(shape, options);
  if (poison_flag()) t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

inline void check_cuda_tensor(const torch::Tensor& t, const char* fn, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), fn, ": ", name, " is on ", t.device(), " but the input is on ",
              like.device(), "; all tensors must be on the same GPU");
  TORCH_CHECK(t.is_contiguous(), fn, ": ", name, " must be contiguous (call .contiguous())");
}

inline void check_same_dtype(const torch::Tensor& t, const char* fn, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), fn, ": ", name, " has dtype ", t.scalar_type(),
              " but the input has ", like.scalar_type(), "; all floating tensors must share one dtype");
}

inline void check_shape(const torch::Tensor& t, const char* fn, const char* name, c10::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, fn, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

// Device properties the plan needs.
struct DeviceLimits {
  int num_sms;
  int64_t smem_per_block;  // opt-in maximum of dynamic shared memory per block
  bool cooperative;
};

inline DeviceLimits device_limits(int device) {
  DeviceLimits d{};
  int smem = 0, coop = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.num_sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  d.smem_per_block = smem;
  d.cooperative = coop != 0;
  return d;
}

// Raises `kernel`'s dynamic shared-memory limit on `device` to the device's opt-in maximum, once
// per (kernel, device) for the life of the process. Setting it to each launch's own size before
// every launch (as this file once did) races: two host threads launching the same kernel can
// interleave set(A), set(B), launch(A > B) and fail the launch. With the limit at the maximum,
// every plan's size (at most that maximum, checked by make_plan) is always allowed.
inline void raise_smem_limit_once(const void* kernel, int device, int64_t smem_optin) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> done;
  const std::lock_guard<std::mutex> lock(mutex);
  if (done.count({kernel, device}) != 0) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_optin)));
  done.insert({kernel, device});
}

// Why `kernel` cannot run this problem as one cooperative launch on `device` (empty when it can):
// no cooperative launch support, W_hh slice too large for shared memory, or fewer co-resident
// blocks than the plan needs (a partitioned or shared GPU). Fills *plan when it can. Used before
// every launch (launch_persistent) and by the Python support check (fastrnn._C.launch_fit), so
// "auto" falls back where an explicit request gets this message as its error.
template <typename Args>
std::string cooperative_fit(void (*kernel)(Args), const CellInfo& cell, int itemsize, int64_t hidden, int64_t batch,
                            bool backward, int device, Plan* plan) {
  const DeviceLimits limits = device_limits(device);
  if (!limits.cooperative) {
    return "GPU " + std::to_string(device) +
           " does not support cooperative launches, which the persistent kernels need";
  }
  *plan = make_plan(cell.gates, itemsize, hidden, batch, limits.num_sms, limits.smem_per_block, backward);
  if (plan->blocks == 0) {
    return "hidden_size " + std::to_string(hidden) + " is too large for the " + cell.name +
           " kernel on this GPU (" + std::to_string(limits.num_sms) + " SMs, " + std::to_string(limits.smem_per_block) +
           " bytes of shared memory per block): each SM's slice of W_hh must fit; see fastrnn/cuda/capacity.py";
  }
  // Above 48 KB of dynamic shared memory the kernel must opt in before the occupancy query.
  raise_smem_limit_once(reinterpret_cast<const void*>(kernel), device, limits.smem_per_block);
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, reinterpret_cast<const void*>(kernel), kThreads,
                                                               static_cast<size_t>(plan->smem)));
  if (static_cast<int64_t>(per_sm) * limits.num_sms < plan->blocks) {
    return std::string("the persistent ") + cell.name + (backward ? " backward" : " forward") + " kernel needs " +
           std::to_string(plan->blocks) + " blocks resident at once (" + std::to_string(plan->smem) +
           " bytes of shared memory each) but this GPU holds only " + std::to_string(per_sm) + " per SM x " +
           std::to_string(limits.num_sms) + " SMs; is another kernel or MPS limiting the GPU?";
  }
  return "";
}

// Plan the launch, check that all blocks can be resident at once, and launch cooperatively.
// `kernel` takes one argument struct `Args` by value.
template <typename Args>
void launch_persistent(void (*kernel)(Args), Args args, const CellInfo& cell, int itemsize, bool backward,
                       const torch::Tensor& like, Plan* used_plan) {
  const char* fn = backward ? "fastrnn cuda backward" : "fastrnn cuda forward";
  const int device = like.device().index();
  Plan plan;
  const std::string why = cooperative_fit(kernel, cell, itemsize, args.hidden, args.batch, backward, device, &plan);
  TORCH_CHECK(why.empty(), fn, ": ", why, "; use backend='triton' or 'reference'");
  args.units = plan.units;
  args.batch_tile = plan.batch_tile;
  void* kernel_args[] = {&args};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(plan.blocks), dim3(kThreads),
                                             kernel_args, static_cast<size_t>(plan.smem),
                                             c10::cuda::getCurrentCUDAStream(device).stream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (used_plan != nullptr) *used_plan = plan;
}

// kernel_fit<Kernel>: cooperative_fit for a run-time cell id and dtype, where Kernel names a
// kernel template through `template <typename Cell, typename T> static auto* get()`.
template <typename Kernel>
struct KernelFit {
  int64_t cell, hidden, batch;
  int device;
  bool backward;
  std::string why;

  template <typename Cell, typename T>
  void operator()() {
    Plan plan;
    why = cooperative_fit(Kernel::template get<Cell, T>(), cell_info_of<Cell>(), sizeof(T), hidden, batch, backward,
                          device, &plan);
  }
};

// Storage type of a torch dtype in the kernels.
template <typename Scalar> struct StorageType { using type = Scalar; };
template <> struct StorageType<c10::Half> { using type = __half; };
template <> struct StorageType<c10::BFloat16> { using type = __nv_bfloat16; };

template <typename T>
const T* cptr(const torch::Tensor& t) {
  using S = std::conditional_t<std::is_same_v<T, __half>, c10::Half,
                               std::conditional_t<std::is_same_v<T, __nv_bfloat16>, c10::BFloat16, float>>;
  return t.defined() ? reinterpret_cast<const T*>(t.data_ptr<S>()) : nullptr;
}

template <typename T>
T* mptr(torch::Tensor& t) {
  return const_cast<T*>(cptr<T>(t));
}

// Calls f.template operator()<Cell, T>() for the run-time cell id and dtype: 4 cells x 3 dtypes.
template <typename F>
void dispatch(int64_t cell, c10::ScalarType dtype, const char* fn, F&& f) {
  dispatch_cell(cell, fn, [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    switch (dtype) {
      case torch::kFloat32: f.template operator()<Cell, float>(); break;
      case torch::kFloat16: f.template operator()<Cell, __half>(); break;
      case torch::kBFloat16: f.template operator()<Cell, __nv_bfloat16>(); break;
      default: TORCH_CHECK(false, fn, ": dtype ", dtype, " is not supported (float32, float16, bfloat16 are)");
    }
  });
}

// Why the kernel named by `Kernel` cannot run (cell, dtype, hidden, batch) on `device`; "" when it can.
template <typename Kernel>
std::string kernel_fit(int64_t cell, c10::ScalarType dtype, int64_t hidden, int64_t batch, int64_t device,
                       bool backward) {
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  KernelFit<Kernel> fit{cell, hidden, batch, static_cast<int>(device), backward, ""};
  dispatch(cell, dtype, "fastrnn._C.launch_fit", fit);
  return fit.why;
}

}  // namespace fastrnn
