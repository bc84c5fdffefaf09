// Host side of the persistent backward kernel (kernels/backward.cuh): checks, buffers, launch.
#include "backward.cuh"
#include "launch.h"

namespace fastrnn {

namespace {

struct BackwardLaunch {
  bool reverse;
  bool tf32;
  const torch::Tensor &dout, &dh_n, &dc_n, &w_hh, &saved, &lengths;
  torch::Tensor &dgx, &dghn, &dh0, &dc0, &dgbuf, &dhbuf, &dcbuf;

  template <typename Cell, typename T>
  void operator()() {
    BackwardArgs<T> a{};
    a.dout = cptr<T>(dout);
    a.dh_n = cptr<T>(dh_n);
    a.dc_n = cptr<T>(dc_n);
    a.w_hh = cptr<T>(w_hh);
    a.saved = saved.data_ptr<float>();
    a.lengths = lengths.data_ptr<int32_t>();
    a.dgx = mptr<T>(dgx);
    a.dghn = mptr<T>(dghn);
    a.dh0 = mptr<T>(dh0);
    a.dc0 = mptr<T>(dc0);
    a.dgbuf = mptr<T>(dgbuf);
    a.dhbuf = dhbuf.data_ptr<float>();
    a.dcbuf = dcbuf.defined() ? dcbuf.data_ptr<float>() : nullptr;
    a.seq_len = dout.size(0);
    a.batch = dout.size(1);
    a.hidden = w_hh.size(1);
    a.reverse = reverse;
    a.tf32 = tf32 && std::is_same_v<T, float>;
    launch_persistent(&persistent_backward_kernel<Cell, T>, a, cell_info_of<Cell>(), sizeof(T), /*backward=*/true, dout, nullptr);
  }
};

struct BackwardKernel {
  template <typename Cell, typename T>
  static auto* get() {
    return &persistent_backward_kernel<Cell, T>;
  }
};

}  // namespace

// Returns [dgx (T, B, G*H), dghn (T, B, H; GRU, else undefined), dh0 (B, H), dc0 (B, H; LSTM)].
std::vector<torch::Tensor> rnn_backward(int64_t cell, bool reverse, bool tf32, torch::Tensor dout, torch::Tensor dh_n,
                                        c10::optional<torch::Tensor> dc_n_opt, torch::Tensor w_hh, torch::Tensor saved,
                                        torch::Tensor lengths) {
  const char* fn = "fastrnn._C.rnn_backward";
  const CellInfo info = cell_info(cell, fn);  // raises for an unknown id
  const int gates = info.gates;
  const int saved_per_unit = info.saved;
  TORCH_CHECK(dout.dim() == 3, fn, ": dout must be 3-D (seq_len, batch, hidden), got ", dout.dim(), "-D");
  TORCH_CHECK(w_hh.dim() == 2, fn, ": weight_hh must be 2-D, got ", w_hh.dim(), "-D");
  const int64_t seq_len = dout.size(0), batch = dout.size(1), hidden = w_hh.size(1);
  TORCH_CHECK(seq_len > 0 && batch > 0 && hidden > 0, fn, ": seq_len, batch and hidden_size must be positive, got ",
              seq_len, ", ", batch, ", ", hidden);
  check_cuda_tensor(dout, fn, "dout", dout);
  check_cuda_tensor(dh_n, fn, "dh_n", dout);
  check_cuda_tensor(w_hh, fn, "weight_hh", dout);
  check_cuda_tensor(saved, fn, "saved", dout);
  check_cuda_tensor(lengths, fn, "lengths", dout);
  check_same_dtype(dh_n, fn, "dh_n", dout);
  check_same_dtype(w_hh, fn, "weight_hh", dout);
  check_shape(dout, fn, "dout", {seq_len, batch, hidden});
  check_shape(dh_n, fn, "dh_n", {batch, hidden});
  check_shape(w_hh, fn, "weight_hh", {gates * hidden, hidden});
  check_shape(saved, fn, "saved", {seq_len, batch, saved_per_unit * hidden});
  check_shape(lengths, fn, "lengths", {batch});
  TORCH_CHECK(saved.scalar_type() == torch::kFloat32, fn, ": saved must be float32 (from rnn_forward)");
  TORCH_CHECK(lengths.scalar_type() == torch::kInt32, fn, ": lengths must be int32, got ", lengths.scalar_type());
  const c10::cuda::CUDAGuard guard(dout.device());
  auto f32 = dout.options().dtype(torch::kFloat32);
  torch::Tensor dc_n, dghn, dc0, dcbuf;
  if (info.has_cell_state) {
    TORCH_CHECK(dc_n_opt.has_value() && dc_n_opt->defined(), fn, ": the LSTM needs dc_n (zeros when unused)");
    dc_n = *dc_n_opt;
    check_cuda_tensor(dc_n, fn, "dc_n", dout);
    check_same_dtype(dc_n, fn, "dc_n", dout);
    check_shape(dc_n, fn, "dc_n", {batch, hidden});
    dc0 = new_buffer({batch, hidden}, dout.options());
    dcbuf = new_buffer({batch, hidden}, f32);
  }
  if (info.gru_recurrent_bias) dghn = new_buffer({seq_len, batch, hidden}, dout.options());
  auto dgx = new_buffer({seq_len, batch, gates * hidden}, dout.options());
  auto dh0 = new_buffer({batch, hidden}, dout.options());
  auto dgbuf = new_buffer({2, batch, gates * hidden}, dout.options());  // exchanged in the storage dtype
  auto dhbuf = new_buffer({batch, hidden}, f32);
  BackwardLaunch launch{reverse, tf32, dout, dh_n, dc_n, w_hh, saved, lengths, dgx, dghn, dh0, dc0, dgbuf, dhbuf, dcbuf};
  dispatch(cell, dout.scalar_type(), fn, launch);
  return {dgx, dghn, dh0, dc0};
}

// Why the backward kernel cannot run (cell, dtype, hidden, batch) on `device`; empty when it can.
std::string backward_fit(int64_t cell, c10::ScalarType dtype, int64_t hidden, int64_t batch, int64_t device) {
  return kernel_fit<BackwardKernel>(cell, dtype, hidden, batch, device, /*backward=*/true);
}

}  // namespace fastrnn
