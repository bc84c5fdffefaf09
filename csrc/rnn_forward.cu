// Host side of the persistent forward kernel (kernels/forward.cuh): checks, buffers, launch.
#include "forward.cuh"
#include "launch.h"

namespace fastrnn {

namespace {

struct ForwardLaunch {
  bool reverse;
  bool tf32;
  const torch::Tensor &gx, &w_hh, &b_hn, &h0, &c0, &lengths;
  torch::Tensor &out, &h_n, &c_n, &saved, &hx, &hstate, &cbuf;

  template <typename Cell, typename T>
  void operator()() {
    ForwardArgs<T> a{};
    a.gx = cptr<T>(gx);
    a.w_hh = cptr<T>(w_hh);
    a.b_hn = cptr<T>(b_hn);
    a.h0 = cptr<T>(h0);
    a.c0 = cptr<T>(c0);
    a.lengths = lengths.data_ptr<int32_t>();
    a.out = mptr<T>(out);
    a.h_n = mptr<T>(h_n);
    a.c_n = mptr<T>(c_n);
    a.saved = saved.data_ptr<float>();
    a.hx = mptr<T>(hx);
    a.hstate = hstate.data_ptr<float>();
    a.cbuf = cbuf.defined() ? cbuf.data_ptr<float>() : nullptr;
    a.seq_len = gx.size(0);
    a.batch = gx.size(1);
    a.hidden = w_hh.size(1);
    a.reverse = reverse;
    a.tf32 = tf32 && std::is_same_v<T, float>;
    launch_persistent(&persistent_forward_kernel<Cell, T>, a, cell_info_of<Cell>(), sizeof(T), /*backward=*/false, gx, nullptr);
  }
};

struct ForwardKernel {
  template <typename Cell, typename T>
  static auto* get() {
    return &persistent_forward_kernel<Cell, T>;
  }
};

}  // namespace

void set_poison(bool enabled) { poison_flag() = enabled; }

// Returns [out (T, B, H), h_n (B, H), c_n (B, H; LSTM, else undefined), saved (T, B, S*H) fp32].
std::vector<torch::Tensor> rnn_forward(int64_t cell, bool reverse, bool tf32, torch::Tensor gx, torch::Tensor w_hh,
                                       c10::optional<torch::Tensor> b_hn_opt, torch::Tensor h0,
                                       c10::optional<torch::Tensor> c0_opt, torch::Tensor lengths) {
  const char* fn = "fastrnn._C.rnn_forward";
  const CellInfo info = cell_info(cell, fn);  // raises for an unknown id
  const int gates = info.gates;
  TORCH_CHECK(gx.dim() == 3, fn, ": gx (the input projection) must be 3-D (seq_len, batch, gates*hidden), got ",
              gx.dim(), "-D");
  TORCH_CHECK(w_hh.dim() == 2, fn, ": weight_hh must be 2-D, got ", w_hh.dim(), "-D");
  const int64_t seq_len = gx.size(0), batch = gx.size(1), hidden = w_hh.size(1);
  TORCH_CHECK(seq_len > 0 && batch > 0 && hidden > 0, fn, ": seq_len, batch and hidden_size must be positive, got ",
              seq_len, ", ", batch, ", ", hidden, " (empty problems are handled in Python)");
  check_cuda_tensor(gx, fn, "gx", gx);
  check_cuda_tensor(w_hh, fn, "weight_hh", gx);
  check_cuda_tensor(h0, fn, "h0", gx);
  check_cuda_tensor(lengths, fn, "lengths", gx);
  check_same_dtype(w_hh, fn, "weight_hh", gx);
  check_same_dtype(h0, fn, "h0", gx);
  check_shape(w_hh, fn, "weight_hh", {gates * hidden, hidden});
  check_shape(gx, fn, "gx", {seq_len, batch, gates * hidden});
  check_shape(h0, fn, "h0", {batch, hidden});
  check_shape(lengths, fn, "lengths", {batch});
  TORCH_CHECK(lengths.scalar_type() == torch::kInt32, fn, ": lengths must be int32, got ", lengths.scalar_type());
  torch::Tensor b_hn, c0, c_n, cbuf;
  if (info.gru_recurrent_bias) {
    TORCH_CHECK(b_hn_opt.has_value() && b_hn_opt->defined(), fn, ": the GRU needs b_hn (zeros when there is no bias)");
    b_hn = *b_hn_opt;
    check_cuda_tensor(b_hn, fn, "b_hn", gx);
    check_same_dtype(b_hn, fn, "b_hn", gx);
    check_shape(b_hn, fn, "b_hn", {hidden});
  }
  const c10::cuda::CUDAGuard guard(gx.device());
  auto f32 = gx.options().dtype(torch::kFloat32);
  if (info.has_cell_state) {
    TORCH_CHECK(c0_opt.has_value() && c0_opt->defined(), fn, ": the LSTM needs c0");
    c0 = *c0_opt;
    check_cuda_tensor(c0, fn, "c0", gx);
    check_same_dtype(c0, fn, "c0", gx);
    check_shape(c0, fn, "c0", {batch, hidden});
    c_n = new_buffer({batch, hidden}, gx.options());
    cbuf = new_buffer({batch, hidden}, f32);
  }
  const int saved_per_unit = info.saved;
  auto out = new_buffer({seq_len, batch, hidden}, gx.options());
  auto h_n = new_buffer({batch, hidden}, gx.options());
  auto saved = new_buffer({seq_len, batch, saved_per_unit * hidden}, f32);
  auto hx = new_buffer({2, batch, hidden}, gx.options());  // exchanged in the storage dtype
  auto hstate = new_buffer({batch, hidden}, f32);
  ForwardLaunch launch{reverse, tf32, gx, w_hh, b_hn, h0, c0, lengths, out, h_n, c_n, saved, hx, hstate, cbuf};
  dispatch(cell, gx.scalar_type(), fn, launch);
  return {out, h_n, c_n, saved};
}

// Why the forward kernel cannot run (cell, dtype, hidden, batch) on `device`; empty when it can.
std::string forward_fit(int64_t cell, c10::ScalarType dtype, int64_t hidden, int64_t batch, int64_t device) {
  return kernel_fit<ForwardKernel>(cell, dtype, hidden, batch, device, /*backward=*/false);
}

}  // namespace fastrnn
