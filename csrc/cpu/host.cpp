// fastrnn._cpu: the fused CPU recurrence (recurrence.h) as Python functions on torch tensors.
//
// Checks every shape, dtype, layout and length it is given before any kernel reads memory, picks
// the instruction-set build the caller names (fastrnn/cpu/isa.py decides which), and splits the
// batch over torch's intra-op threads (at::parallel_for: torch.get_num_threads() of them). Rows
// are independent in the kernels, so every thread count gives the same bits.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cells.h"
#include "kernel_args.h"

namespace fastrnn_cpu {
namespace {

struct Isa {
  const char* name;
  void (*forward)(const ForwardArgs&, int, int, float*);
  void (*backward)(const BackwardArgs&, int, int, float*);
  long (*workspace)(int, int, int);
  void (*forward_team)(const ForwardArgs&, int, int, float*, int*);
  void (*backward_team)(const BackwardArgs&, int, int, float*, int*);
  int (*team_rows)(int);
  long (*team_workspace)(int, int);
  int (*width)();
};

// Index = the isa id the Python side passes (fastrnn/cpu/isa.py ISAS, in this order).
#define FASTRNN_ISA_ENTRY(ns)                                                                              \
  {                                                                                                        \
#ns, ns::forward_rows, ns::backward_rows, ns::workspace_floats, ns::forward_team, ns::backward_team, \
        ns::team_rows, ns::team_workspace_floats, ns::vector_width                                         \
  }
const Isa ISAS[] = {FASTRNN_ISA_ENTRY(portable), FASTRNN_ISA_ENTRY(avx2), FASTRNN_ISA_ENTRY(avx512)};
#undef FASTRNN_ISA_ENTRY
constexpr int NUM_ISAS = sizeof(ISAS) / sizeof(ISAS[0]);

bool cpu_has(int isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case 0: return true;
    case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return false;
  }
#else
  return isa == 0;  // the x86 builds compile elsewhere, as generic vector code, but never run
#endif
}

const Isa& isa_of(int64_t isa) {
  TORCH_CHECK(isa >= 0 && isa < NUM_ISAS, "fastrnn._cpu: instruction set id must be in [0, ", NUM_ISAS, "), got ",
              isa);
  TORCH_CHECK(cpu_has((int)isa), "fastrnn._cpu: this CPU does not support the ", ISAS[isa].name,
              " instruction set");
  return ISAS[isa];
}

void check_tensor(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype = at::kFloat) {
  TORCH_CHECK(t.defined(), "fastrnn._cpu: ", name, " is missing; expected shape ", shape);
  TORCH_CHECK(t.device().is_cpu(), "fastrnn._cpu: ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "fastrnn._cpu: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "fastrnn._cpu: ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "fastrnn._cpu: ", name, " must be contiguous");
}

void check_cell(int64_t cell) {
  TORCH_CHECK(cell >= RNN_TANH && cell <= GRU, "fastrnn._cpu: cell id must be 0 (rnn_tanh), 1 (rnn_relu), ",
              "2 (lstm) or 3 (gru), got ", cell);
}

void check_lengths(const at::Tensor& lengths, int64_t B, int64_t T) {
  check_tensor(lengths, "lengths", {B}, at::kInt);
  const int32_t* l = lengths.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(l[b] >= 0 && l[b] <= T, "fastrnn._cpu: lengths must be in [0, ", T, "], got ", l[b], " at ", b);
}

void check_sizes(int64_t T, int64_t B, int64_t H) {
  TORCH_CHECK(T >= 1 && B >= 1 && H >= 1, "fastrnn._cpu: T, B and H must be positive, got ", T, ", ", B, ", ", H);
  TORCH_CHECK(T < (1LL << 31) && B < (1LL << 31) && 4 * H < (1LL << 31),
              "fastrnn._cpu: T, B and 4*H must each be below 2^31, got ", T, ", ", B, ", ", H);
}

// How many threads share one small batch's hidden units (recurrence.h, teams): torch's thread
// count, when the batch fits one register tile, every thread gets at least two panels of units,
// and W_hh is larger than TEAM_MIN_WEIGHT_BYTES; 1 otherwise (then rows are split over threads,
// if there are several rows). Below that size one core holds W_hh in its own L2 and a step takes
// a few microseconds, so a barrier per step costs more than a second core gains; and a spinning
// barrier is at the mercy of the scheduler on a busy machine (README, Speed).
constexpr int64_t TEAM_MIN_WEIGHT_BYTES = 1 << 20;

int team_size(const Isa& isa, int64_t cell, int64_t B, int64_t H) {
  const int64_t threads = at::get_num_threads(), panels = (H + isa.width() - 1) / isa.width();
  const int64_t weight_bytes = num_gates((int)cell) * H * H * (int64_t)sizeof(float);
  if (threads < 2 || B > isa.team_rows((int)cell) || panels < 2 * threads || weight_bytes <= TEAM_MIN_WEIGHT_BYTES)
    return 1;
  return (int)threads;
}

// Runs member(tid, n, workspace, barrier) on n threads at once: the barrier needs every member
// running, which a thread pool that may run chunks one after another cannot promise. On torch's
// own OpenMP threads where OpenMP gives n of them (not inside another parallel region): new
// threads would compete for the cores with torch's idle OpenMP workers, which spin for a while
// after each parallel op (the input projection just before this), and a member waiting for a core
// holds up every step's barrier (measured, GRU B=1 H=512 at 2 threads: a fixed cost of ~4.6 ms per
// call on new threads). Else on this thread and n - 1 new ones.
template <class Member>
void run_team(int n, long workspace_floats, const Member& member) {
  std::vector<float> workspace(workspace_floats, 0.0f);
  std::vector<int> barrier(32, 0);
#ifdef _OPENMP
  bool ran = false;
#pragma omp parallel num_threads(n)
  {
    if (omp_get_num_threads() == n) {  // all or none of the team runs the member
      member(omp_get_thread_num(), n, workspace.data(), barrier.data());
#pragma omp master
      ran = true;
    }
  }
  if (ran) return;
#endif
  std::vector<std::thread> others;
  others.reserve(n - 1);
  for (int tid = 1; tid < n; ++tid) others.emplace_back([&, tid] { member(tid, n, workspace.data(), barrier.data()); });
  member(0, n, workspace.data(), barrier.data());
  for (auto& thread : others) thread.join();
}

// Rows [0, B) over torch's threads, each chunk with its own zeroed scratch.
template <class Run>
void over_rows(const Isa& isa, int64_t cell, int64_t B, int64_t H, const Run& run) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> workspace(isa.workspace((int)cell, (int)H, (int)(end - begin)), 0.0f);
    run((int)begin, (int)end, workspace.data());
  });
}

// A new output tensor; NaN-filled when poison is set (the tests: an element the kernel leaves
// unwritten shows up as NaN instead of whatever memory held).
at::Tensor output(at::IntArrayRef shape, const at::TensorOptions& opts, bool poison) {
  return poison ? at::full(shape, std::numeric_limits<float>::quiet_NaN(), opts) : at::empty(shape, opts);
}

at::Tensor optional_or_empty(const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// -> (out, h_n, c_n (LSTM, else empty), saved (empty unless save))
std::vector<at::Tensor> forward(int64_t isa_id, int64_t cell, bool reverse, const at::Tensor& gx,
                                const at::Tensor& packed, const c10::optional<at::Tensor>& b_hn_opt,
                                const at::Tensor& h0, const c10::optional<at::Tensor>& c0_opt,
                                const at::Tensor& lengths, bool save, bool poison) {
  const Isa& isa = isa_of(isa_id);
  check_cell(cell);
  TORCH_CHECK(gx.dim() == 3 && h0.dim() == 2, "fastrnn._cpu.forward: gx must be (T, B, G*H) and h0 (B, H), got ",
              gx.sizes(), " and ", h0.sizes());
  const int64_t T = gx.size(0), B = gx.size(1), H = h0.size(1), G = num_gates((int)cell), S = num_saved((int)cell);
  const int64_t W = isa.width(), P = (H + W - 1) / W;
  check_sizes(T, B, H);
  check_tensor(gx, "gx", {T, B, G * H});
  check_tensor(h0, "h0", {B, H});
  check_tensor(packed, "packed W_hh^T", {P, H, G, W});
  check_lengths(lengths, B, T);
  at::Tensor b_hn = optional_or_empty(b_hn_opt), c0 = optional_or_empty(c0_opt);
  TORCH_CHECK(cell == GRU || !b_hn.defined(), "fastrnn._cpu.forward: b_hn is for the GRU only");
  if (b_hn.defined()) check_tensor(b_hn, "b_hn", {H});
  TORCH_CHECK((cell == LSTM) == c0.defined(), "fastrnn._cpu.forward: c0 must be given for the LSTM and only for it");
  if (c0.defined()) check_tensor(c0, "c0", {B, H});

  auto opts = gx.options();
  at::Tensor out = output({T, B, H}, opts, poison), h_n = output({B, H}, opts, poison);
  at::Tensor c_n = cell == LSTM ? output({B, H}, opts, poison) : at::empty({0}, opts);
  at::Tensor saved = save && S > 0 ? output({T, B, S * H}, opts, poison) : at::empty({0}, opts);
  ForwardArgs a;
  a.cell = (int)cell, a.T = (int)T, a.B = (int)B, a.H = (int)H, a.reverse = reverse;
  a.gx = gx.data_ptr<float>(), a.packed = packed.data_ptr<float>();
  a.b_hn = b_hn.defined() ? b_hn.data_ptr<float>() : nullptr;
  a.h0 = h0.data_ptr<float>(), a.c0 = c0.defined() ? c0.data_ptr<float>() : nullptr;
  a.lengths = lengths.data_ptr<int32_t>();
  a.out = out.data_ptr<float>(), a.h_n = h_n.data_ptr<float>();
  a.c_n = cell == LSTM ? c_n.data_ptr<float>() : nullptr;
  a.saved = saved.numel() ? saved.data_ptr<float>() : nullptr;
  const int team = team_size(isa, cell, B, H);
  if (team > 1)
    run_team(team, isa.team_workspace((int)cell, (int)H),
             [&](int tid, int n, float* ws, int* bar) { isa.forward_team(a, tid, n, ws, bar); });
  else
    over_rows(isa, cell, B, H, [&](int begin, int end, float* ws) { isa.forward(a, begin, end, ws); });
  return {out, h_n, c_n, saved};
}

// -> (dgx, dghn (GRU, else empty), dh0, dc0 (LSTM, else empty))
std::vector<at::Tensor> backward(int64_t isa_id, int64_t cell, bool reverse, const at::Tensor& dout,
                                 const at::Tensor& dh_n, const c10::optional<at::Tensor>& dc_n_opt,
                                 const at::Tensor& packed, const at::Tensor& saved, const at::Tensor& out,
                                 const at::Tensor& h0, const c10::optional<at::Tensor>& c0_opt,
                                 const at::Tensor& lengths, bool poison) {
  const Isa& isa = isa_of(isa_id);
  check_cell(cell);
  TORCH_CHECK(out.dim() == 3, "fastrnn._cpu.backward: out must be (T, B, H), got ", out.sizes());
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2), G = num_gates((int)cell), S = num_saved((int)cell);
  const int64_t W = isa.width(), P = (H + W - 1) / W;
  check_sizes(T, B, H);
  check_tensor(out, "out", {T, B, H});
  check_tensor(dout, "dout", {T, B, H});
  check_tensor(dh_n, "dh_n", {B, H});
  check_tensor(h0, "h0", {B, H});
  check_tensor(packed, "packed W_hh", {P, G * H, W});
  if (S > 0) check_tensor(saved, "saved activations", {T, B, S * H});
  check_lengths(lengths, B, T);
  at::Tensor dc_n = optional_or_empty(dc_n_opt), c0 = optional_or_empty(c0_opt);
  TORCH_CHECK((cell == LSTM) == dc_n.defined() && (cell == LSTM) == c0.defined(),
              "fastrnn._cpu.backward: dc_n and c0 must be given for the LSTM and only for it");
  if (cell == LSTM) {
    check_tensor(dc_n, "dc_n", {B, H});
    check_tensor(c0, "c0", {B, H});
  }
  auto opts = out.options();
  at::Tensor dgx = output({T, B, G * H}, opts, poison), dh0 = output({B, H}, opts, poison);
  at::Tensor dghn = cell == GRU ? output({T, B, H}, opts, poison) : at::empty({0}, opts);
  at::Tensor dc0 = cell == LSTM ? output({B, H}, opts, poison) : at::empty({0}, opts);
  BackwardArgs a;
  a.cell = (int)cell, a.T = (int)T, a.B = (int)B, a.H = (int)H, a.reverse = reverse;
  a.dout = dout.data_ptr<float>(), a.dh_n = dh_n.data_ptr<float>();
  a.dc_n = cell == LSTM ? dc_n.data_ptr<float>() : nullptr;
  a.packed = packed.data_ptr<float>();
  a.saved = S > 0 ? saved.data_ptr<float>() : nullptr;
  a.out = out.data_ptr<float>(), a.h0 = h0.data_ptr<float>();
  a.c0 = cell == LSTM ? c0.data_ptr<float>() : nullptr;
  a.lengths = lengths.data_ptr<int32_t>();
  a.dgx = dgx.data_ptr<float>(), a.dghn = cell == GRU ? dghn.data_ptr<float>() : nullptr;
  a.dh0 = dh0.data_ptr<float>(), a.dc0 = cell == LSTM ? dc0.data_ptr<float>() : nullptr;
  const int team = team_size(isa, cell, B, H);
  if (team > 1)
    run_team(team, isa.team_workspace((int)cell, (int)H),
             [&](int tid, int n, float* ws, int* bar) { isa.backward_team(a, tid, n, ws, bar); });
  else
    over_rows(isa, cell, B, H, [&](int begin, int end, float* ws) { isa.backward(a, begin, end, ws); });
  return {dgx, dghn, dh0, dc0};
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (int i = 0; i < NUM_ISAS; ++i)
    if (cpu_has(i)) names.push_back(ISAS[i].name);
  return names;
}

int64_t vector_width(int64_t isa_id) {
  TORCH_CHECK(isa_id >= 0 && isa_id < NUM_ISAS, "fastrnn._cpu: instruction set id must be in [0, ", NUM_ISAS,
              "), got ", isa_id);
  return ISAS[isa_id].width();
}

}  // namespace
}  // namespace fastrnn_cpu

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "fastrnn's fused CPU recurrence (csrc/cpu); use it through backend='cpu'";
  m.def("forward", &fastrnn_cpu::forward, py::call_guard<py::gil_scoped_release>());
  m.def("backward", &fastrnn_cpu::backward, py::call_guard<py::gil_scoped_release>());
  m.def("supported_isas", &fastrnn_cpu::supported_isas, "instruction sets this CPU runs, in isa id order");
  m.def("vector_width", &fastrnn_cpu::vector_width, "floats per vector (panel width) of an instruction set");
}
