// Python bindings of the CUDA extension, imported as fastrnn._C.
#include <torch/extension.h>

#include <tuple>

#include "layout.cuh"

#ifndef FASTRNN_CUDA_ARCHS
#define FASTRNN_CUDA_ARCHS "unknown"
#endif

namespace fastrnn {
void probe_iota(torch::Tensor out);
void empty_barriers(int64_t iters, int64_t blocks, int64_t device);
void set_poison(bool enabled);
std::string forward_fit(int64_t cell, c10::ScalarType dtype, int64_t hidden, int64_t batch, int64_t device);
std::string backward_fit(int64_t cell, c10::ScalarType dtype, int64_t hidden, int64_t batch, int64_t device);
std::vector<torch::Tensor> rnn_forward(int64_t cell, bool reverse, bool tf32, torch::Tensor gx, torch::Tensor w_hh,
                                       c10::optional<torch::Tensor> b_hn, torch::Tensor h0,
                                       c10::optional<torch::Tensor> c0, torch::Tensor lengths);
std::vector<torch::Tensor> rnn_backward(int64_t cell, bool reverse, bool tf32, torch::Tensor dout, torch::Tensor dh_n,
                                        c10::optional<torch::Tensor> dc_n, torch::Tensor w_hh, torch::Tensor saved,
                                        torch::Tensor lengths);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastrnn CUDA kernels";
  m.attr("cuda_archs") = FASTRNN_CUDA_ARCHS;
  m.def("probe_iota", &fastrnn::probe_iota, "Fill a float32 CUDA tensor with 0, 1, 2, ... (build probe)");
  m.def("empty_barriers", &fastrnn::empty_barriers,
        "Floor of a persistent step: one cooperative launch of `blocks` x 256 threads doing `iters` empty "
        "grid.sync() calls, on the current stream of `device` (time it with CUDA events)",
        py::arg("iters"), py::arg("blocks"), py::arg("device"));
  m.def("rnn_forward", &fastrnn::rnn_forward,
        "Persistent forward of one layer-direction: (cell, reverse, tf32, gx, w_hh, b_hn, h0, c0, lengths) -> "
        "[out, h_n, c_n, saved]; tf32: float32 recurrent product on TF32 tensor cores",
        py::arg("cell"), py::arg("reverse"), py::arg("tf32"), py::arg("gx"), py::arg("w_hh"), py::arg("b_hn"), py::arg("h0"),
        py::arg("c0"), py::arg("lengths"));
  m.def("rnn_backward", &fastrnn::rnn_backward,
        "Persistent backward of one layer-direction: (cell, reverse, tf32, dout, dh_n, dc_n, w_hh, saved, lengths) "
        "-> [dgx, dghn, dh0, dc0]; tf32: float32 recurrent product on TF32 tensor cores",
        py::arg("cell"), py::arg("reverse"), py::arg("tf32"), py::arg("dout"), py::arg("dh_n"), py::arg("dc_n"), py::arg("w_hh"),
        py::arg("saved"), py::arg("lengths"));
  m.def(
      "launch_fit",
      [](int64_t cell, torch::Dtype dtype, int64_t hidden, int64_t batch, int64_t device) {
        std::string why = fastrnn::forward_fit(cell, dtype, hidden, batch, device);
        return why.empty() ? fastrnn::backward_fit(cell, dtype, hidden, batch, device) : why;
      },
      "Why the persistent forward or backward kernel cannot run (cell, dtype, hidden, batch) as one "
      "cooperative launch on GPU `device` (shared memory, co-resident blocks, cooperative support); '' when both can",
      py::arg("cell"), py::arg("dtype"), py::arg("hidden"), py::arg("batch"), py::arg("device"));
  m.def("set_poison", &fastrnn::set_poison,
        "Test hook: fill the kernels' output and work buffers with NaN before each launch",
        py::arg("enabled"));
  m.def(
      "plan",
      [](int gates, int itemsize, int64_t hidden, int64_t batch, int num_sms, int64_t smem_per_block, bool backward) {
        const fastrnn::Plan p =
            fastrnn::make_plan(gates, itemsize, hidden, batch, num_sms, smem_per_block, backward);
        return std::make_tuple(p.blocks, p.units, p.batch_tile, p.smem);
      },
      "Launch plan of the persistent kernels (kernels/layout.cuh), pure arithmetic: "
      "(gates, itemsize, hidden, batch, num_sms, smem_per_block, backward) -> (blocks, units, batch_tile, smem); "
      "blocks == 0 when W_hh does not fit",
      py::arg("gates"), py::arg("itemsize"), py::arg("hidden"), py::arg("batch"), py::arg("num_sms"),
      py::arg("smem_per_block"), py::arg("backward"));
}
