// The persistent kernels (kernels/forward.cuh, kernels/backward.cuh) run on the CPU under
// host_emulation.h (one std::thread per CUDA thread, real barriers), against the CPU loop of
// persistent_reference.h. Tests the orchestration without a GPU: work split over several blocks
// (one and several units per block), batch tiles smaller than the batch, the h / dgates double
// buffers and grid barriers, lengths (0, partial, full), reverse, NaN-poisoned buffers.
// fp32 only (the 16-bit conversions are CUDA intrinsics; test_persistent.cu covers them on a GPU).
#include "host_emulation.h"  // first: supplies the CUDA built-ins

#include "backward.cuh"
#include "forward.cuh"
#include "persistent_reference.h"

namespace {

using fastrnn_test::compare;
using fastrnn_test::Problem;

constexpr int kEmuThreads = 64;  // 2 warps per block keeps the thread count small

template <typename Cell>
void run_case(const char* name, int64_t TT, int64_t B, int64_t H, bool reverse, int sms, int tile, std::mt19937& rng) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  using T = float;
  const Problem<Cell, T> p(TT, B, H, reverse, rng);
  const float nan = std::nanf("");
  const std::string tag = p.tag(name) + " sms=" + std::to_string(sms) + " tile=" + std::to_string(tile);

  auto plan_for = [&](bool backward) {
    const int64_t units = (H + std::min<int64_t>(H, sms) - 1) / std::min<int64_t>(H, sms);
    // A shared-memory budget that allows exactly `tile` batch rows per pass.
    const int64_t budget = fastrnn::smem_bytes(G, sizeof(T), H, units, tile, backward);
    const fastrnn::Plan plan = fastrnn::make_plan(G, sizeof(T), H, B, sms, budget, backward);
    if (plan.blocks == 0 || plan.batch_tile != std::min<int64_t>(tile, B)) {
      std::printf("FAIL %s: unexpected plan blocks=%d tile=%d\n", tag.c_str(), plan.blocks, plan.batch_tile);
      std::exit(1);
    }
    return plan;
  };

  std::vector<float> out(TT * B * H, nan), h_n(B * H, nan), c_n(B * H, nan), saved(TT * B * S * H, nan);
  std::vector<float> hbuf(2 * B * H, nan), cbuf(B * H, nan);
  fastrnn::ForwardArgs<T> fa{};
  fa.gx = p.gx.data();
  fa.w_hh = p.w.data();
  fa.b_hn = p.b_hn.data();
  fa.h0 = p.h0.data();
  fa.c0 = p.c0.data();
  fa.lengths = p.lengths.data();
  fa.out = out.data();
  fa.h_n = h_n.data();
  fa.c_n = c_n.data();
  fa.saved = saved.data();
  fa.hbuf = hbuf.data();
  fa.cbuf = cbuf.data();
  fa.seq_len = TT;
  fa.batch = B;
  fa.hidden = H;
  fa.reverse = reverse;
  const fastrnn::Plan fplan = plan_for(false);
  fa.units = fplan.units;
  fa.batch_tile = fplan.batch_tile;
  fastrnn_emu::launch(fastrnn::persistent_forward_kernel<Cell, T>, fplan.blocks, kEmuThreads, fplan.smem, fa);
  auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  compare(d(out), p.out, 1e-5, tag + " out");
  compare(d(h_n), p.h_n, 1e-5, tag + " h_n");
  if (Cell::kHasCellState) compare(d(c_n), p.c_n, 1e-5, tag + " c_n");

  std::vector<float> dgx(TT * B * G * H, nan), dghn(TT * B * H, nan), dh0(B * H, nan), dc0(B * H, nan);
  std::vector<float> dgbuf(2 * B * G * H, nan), dhbuf(B * H, nan), dcbuf(B * H, nan);
  fastrnn::BackwardArgs<T> ba{};
  ba.dout = p.dout.data();
  ba.dh_n = p.dh_n.data();
  ba.dc_n = p.dc_n.data();
  ba.w_hh = p.w.data();
  ba.saved = saved.data();
  ba.lengths = p.lengths.data();
  ba.dgx = dgx.data();
  ba.dghn = dghn.data();
  ba.dh0 = dh0.data();
  ba.dc0 = dc0.data();
  ba.dgbuf = dgbuf.data();
  ba.dhbuf = dhbuf.data();
  ba.dcbuf = dcbuf.data();
  ba.seq_len = TT;
  ba.batch = B;
  ba.hidden = H;
  ba.reverse = reverse;
  const fastrnn::Plan bplan = plan_for(true);
  ba.units = bplan.units;
  ba.batch_tile = bplan.batch_tile;
  fastrnn_emu::launch(fastrnn::persistent_backward_kernel<Cell, T>, bplan.blocks, kEmuThreads, bplan.smem, ba);
  compare(d(dgx), p.dgx, 1e-5, tag + " dgx");
  if (Cell::kGruRecurrentBias) compare(d(dghn), p.dghn, 1e-5, tag + " dghn");
  compare(d(dh0), p.dh0, 1e-5, tag + " dh0");
  if (Cell::kHasCellState) compare(d(dc0), p.dc0, 1e-5, tag + " dc0");
}

template <typename Cell>
void run_cell(const char* name, std::mt19937& rng) {
  for (bool reverse : {false, true}) {
    run_case<Cell>(name, 5, 5, 40, reverse, 4, 2, rng);   // 4 blocks x 10 units, 3 batch tiles
    run_case<Cell>(name, 4, 3, 24, reverse, 32, 8, rng);  // 24 blocks x 1 unit, one tile
    run_case<Cell>(name, 1, 1, 7, reverse, 3, 1, rng);    // T=1, B=1, last block has 1 unit
  }
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  run_cell<fastrnn::ElmanTanhCell>("rnn_tanh", rng);
  run_cell<fastrnn::ElmanReluCell>("rnn_relu", rng);
  run_cell<fastrnn::LstmCell>("lstm", rng);
  run_cell<fastrnn::GruCell>("gru", rng);
  if (fastrnn_test::failures > 0) {
    std::printf("persistent kernels (CPU emulation): %d failures\n", fastrnn_test::failures);
    return 1;
  }
  std::printf("persistent kernels (CPU emulation): all cases ok\n");
  return 0;
}
