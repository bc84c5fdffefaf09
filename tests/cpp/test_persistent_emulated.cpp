// The persistent kernels (kernels/forward.cuh, kernels/backward.cuh) run on the CPU under
// host_emulation.h (one std::thread per CUDA thread, real barriers), against the CPU loop of
// persistent_reference.h. Tests the orchestration without a GPU: work split over several blocks
// (one and several units per block; H=768 in 128 blocks of 6 units, the target shape's split),
// several batch tiles per step (balanced by the plan) and the batch in one tile with the items'
// state in registers (resident), the cp.async staging (copies deferred until the wait), the
// division-free index walk (FlatWalk) against divisions, the h / dgates double
// buffers and grid barriers, lengths (0, partial, full), reverse, NaN-poisoned buffers and
// shared memory, the K split over 2 and 8 warps (warps without a k-tile included); fp32 (FMA
// path), fp32 with TF32 and bf16 / fp16 (the mma paths, with mma.sync emulated from its
// documented fragment layouts; test_persistent.cu and test_mma.cu check the real instructions
// on a GPU).
#include "host_emulation.h"  // first: supplies the CUDA built-ins

#include "backward.cuh"
#include "forward.cuh"
#include "persistent_reference.h"

#include <algorithm>
#include <type_traits>

namespace {

using fastrnn_test::compare;
using fastrnn_test::Problem;

template <typename T>
std::vector<T> converted(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = fastrnn::from_float<T>(v[i]);
  return out;
}

template <typename T>
std::vector<double> widened(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = fastrnn::to_float(v[i]);
  return out;
}

template <typename T>
const char* dtype_name(bool tf32) {
  if constexpr (std::is_same_v<T, float>) return tf32 ? "fp32/tf32" : "fp32";
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
  return "fp16";
}

// Relative error bound per storage dtype. fp32 sums in a different order than the double loop;
// bf16 / fp16 round h_{t-1} and dgates to the storage dtype before the product (as cuDNN does),
// and round the stored outputs; these bounds sit at ~2-4x the errors measured on these cases.
template <typename T>
double tolerance(bool tf32) {
  if constexpr (std::is_same_v<T, float>) return tf32 ? 5e-3 : 1e-5;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return 1.5e-2;
  return 3e-3;
}

template <typename Cell, typename T>
void run_case(const char* name, int64_t TT, int64_t B, int64_t H, bool reverse, int sms, int tile, int threads,
              bool tf32, std::mt19937& rng) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const Problem<Cell, T> p(TT, B, H, reverse, rng);
  const float nan = std::nanf("");
  const T tnan = fastrnn::from_float<T>(nan);
  const double tol = tolerance<T>(tf32);
  const std::string tag = p.tag(name) + " " + dtype_name<T>(tf32) + " sms=" + std::to_string(sms) +
                          " tile=" + std::to_string(tile) + " threads=" + std::to_string(threads);

  auto plan_for = [&](bool backward) {
    const int64_t units = (H + std::min<int64_t>(H, sms) - 1) / std::min<int64_t>(H, sms);
    // A shared-memory budget that allows exactly `tile` batch rows per pass.
    const int64_t budget = fastrnn::smem_bytes(G, sizeof(T), H, units, tile, backward);
    const fastrnn::Plan plan = fastrnn::make_plan(G, sizeof(T), H, B, sms, budget, backward);
    // The plan balances the passes over the batch: ceil(B / passes) rows each.
    const int64_t passes = (B + tile - 1) / tile;
    if (plan.blocks == 0 || plan.batch_tile != (B + passes - 1) / passes) {
      std::printf("FAIL %s: unexpected plan blocks=%d tile=%d\n", tag.c_str(), plan.blocks, plan.batch_tile);
      std::exit(1);
    }
    return plan;
  };

  const auto gx = converted<T>(p.gx), w = converted<T>(p.w), b_hn = converted<T>(p.b_hn);
  const auto h0 = converted<T>(p.h0), c0 = converted<T>(p.c0);
  std::vector<T> out(TT * B * H, tnan), h_n(B * H, tnan), c_n(B * H, tnan);
  std::vector<T> hx(2 * B * H, tnan);
  std::vector<float> saved(TT * B * S * H, nan), hstate(B * H, nan), cbuf(B * H, nan);
  fastrnn::ForwardArgs<T> fa{};
  fa.gx = gx.data();
  fa.w_hh = w.data();
  fa.b_hn = b_hn.data();
  fa.h0 = h0.data();
  fa.c0 = c0.data();
  fa.lengths = p.lengths.data();
  fa.out = out.data();
  fa.h_n = h_n.data();
  fa.c_n = c_n.data();
  fa.saved = saved.data();
  fa.hx = hx.data();
  fa.hstate = hstate.data();
  fa.cbuf = cbuf.data();
  fa.seq_len = TT;
  fa.batch = B;
  fa.hidden = H;
  fa.reverse = reverse;
  fa.tf32 = tf32;
  const fastrnn::Plan fplan = plan_for(false);
  fa.units = fplan.units;
  fa.batch_tile = fplan.batch_tile;
  fastrnn_emu::launch(fastrnn::persistent_forward_kernel<Cell, T>, fplan.blocks, threads, fplan.smem, fa);
  compare(widened(out), p.out, tol, tag + " out");
  compare(widened(h_n), p.h_n, tol, tag + " h_n");
  if (Cell::kHasCellState) compare(widened(c_n), p.c_n, tol, tag + " c_n");

  const auto dout = converted<T>(p.dout), dh_n = converted<T>(p.dh_n), dc_n = converted<T>(p.dc_n);
  std::vector<T> dgx(TT * B * G * H, tnan), dghn(TT * B * H, tnan), dh0(B * H, tnan), dc0(B * H, tnan);
  std::vector<T> dgbuf(2 * B * G * H, tnan);
  std::vector<float> dhbuf(B * H, nan), dcbuf(B * H, nan);
  fastrnn::BackwardArgs<T> ba{};
  ba.dout = dout.data();
  ba.dh_n = dh_n.data();
  ba.dc_n = dc_n.data();
  ba.w_hh = w.data();
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
  ba.tf32 = tf32;
  const fastrnn::Plan bplan = plan_for(true);
  ba.units = bplan.units;
  ba.batch_tile = bplan.batch_tile;
  fastrnn_emu::launch(fastrnn::persistent_backward_kernel<Cell, T>, bplan.blocks, threads, bplan.smem, ba);
  const auto want = p.backward(widened(saved));  // from the kernel's own forward (persistent_reference.h)
  compare(widened(dgx), want.dgx, tol, tag + " dgx");
  if (Cell::kGruRecurrentBias) compare(widened(dghn), want.dghn, tol, tag + " dghn");
  compare(widened(dh0), want.dh0, tol, tag + " dh0");
  if (Cell::kHasCellState) compare(widened(dc0), want.dc0, tol, tag + " dc0");
}

template <typename Cell, typename T>
void run_dtype(const char* name, bool tf32, std::mt19937& rng) {
  for (bool reverse : {false, true}) {
    run_case<Cell, T>(name, 5, 5, 40, reverse, 4, 2, 64, tf32, rng);    // 4 blocks x 10 units, 3 batch tiles
    run_case<Cell, T>(name, 4, 3, 24, reverse, 32, 8, 64, tf32, rng);   // 24 blocks x 1 unit, one tile
    run_case<Cell, T>(name, 1, 1, 7, reverse, 3, 1, 64, tf32, rng);     // T=1, B=1, last block has 1 unit
  }
  run_case<Cell, T>(name, 3, 9, 40, false, 2, 8, 256, tf32, rng);      // 8 warps (some without a k-tile), 2 tiles
  run_case<Cell, T>(name, 3, 2, 150, true, 2, 2, 64, tf32, rng);       // 75 units per block: several row tiles
  run_case<Cell, T>(name, 2, 21, 24, true, 3, 21, 64, tf32, rng);      // one pass over 3 n-tiles, the last partial
}

// The target shape's work split: H=768 over 128 blocks of 6 units (an H100/H200 with
// 132 SMs: 24 rows in two row tiles, K = 768 or 3072 split over the warps), several batch tiles
// per step (B=5 in passes of 2, 2, 1 rows; B=11 in passes of 4, 4, 3), both directions, with
// lengths (0, partial, full); and B=5 in one pass (resident). fp32 (FMA path) only at H=768: the emulated mma synchronises each
// warp's 32 threads per instruction, minutes for 128 blocks; the 16-bit mma path with 6 units a
// block runs at H=48 over 8 blocks here, and at H=768 in test_persistent.cu on a GPU.
template <typename Cell>
void run_target_split(const char* name, std::mt19937& rng) {
  for (bool reverse : {false, true}) run_case<Cell, float>(name, 3, 5, 768, reverse, 128, 2, 32, false, rng);
  run_case<Cell, float>(name, 2, 11, 768, true, 128, 4, 32, false, rng);
  // One tile of 5 sequences x 6 units = 30 items on 32 threads: the resident mode (state in
  // registers, forward.cuh / backward.cuh), with a length-0 and a partial sequence.
  run_case<Cell, float>(name, 3, 5, 768, false, 128, 5, 32, false, rng);
  for (bool reverse : {false, true}) {
    run_case<Cell, __nv_bfloat16>(name, 3, 5, 48, reverse, 8, 2, 64, false, rng);
    run_case<Cell, __half>(name, 3, 11, 48, reverse, 8, 4, 64, false, rng);
  }
}

// prefetch_rows_l2 (kernels/device.cuh) hints every 32-byte sector each segment touches, also
// for segments that start inside a sector (a block's units at H=768 bf16 start 12*p bytes into a
// row): every byte of every segment lies in a hinted sector, and every hint is a sector start.
void check_prefetch_tails() {
  struct Args {
    const unsigned char* base;
    int64_t rows, stride, span;
  };
  alignas(32) static unsigned char buffer[64 * 1024];
  for (int64_t offset : {0, 2, 12, 30, 31}) {
    for (int64_t span : {1, 12, 32, 33, 100}) {
      const Args args{buffer + offset, 7, 1538, span};  // stride not a multiple of 32 either
      std::vector<const void*> log;
      fastrnn_emu::prefetch_log = &log;
      fastrnn_emu::launch([](Args a) { fastrnn::prefetch_rows_l2(a.base, a.rows, a.stride, a.span); }, 1, 64, 0, args);
      fastrnn_emu::prefetch_log = nullptr;
      std::vector<bool> hinted(sizeof(buffer) / 32 + 1, false);
      bool aligned = true;
      for (const void* p : log) {
        const auto addr = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(buffer);
        aligned = aligned && addr % 32 == 0;
        hinted[addr / 32] = true;
      }
      bool covered = true;
      size_t needed = 0;
      for (int64_t r = 0; r < args.rows; ++r) {
        const int64_t first = offset + r * args.stride;
        for (int64_t i = first; i < first + span; ++i) covered = covered && hinted[i / 32];
        needed += (first + span - 1) / 32 - first / 32 + 1;
      }
      if (!aligned || !covered || log.size() != needed) {
        std::printf("FAIL prefetch_rows_l2 offset=%ld span=%ld: aligned=%d covered=%d hints=%zu (want %zu)\n",
                    static_cast<long>(offset), static_cast<long>(span), aligned, covered, log.size(), needed);
        ++fastrnn_test::failures;
      }
      // prefetch_offset_l2 (the forward's once-per-kernel offsets): one hint per thread at
      // base + shift + offset hints exactly prefetch_rows_l2's sectors shifted, for a base
      // moved by whole sectors (here 1024 bytes, as a step moves the forward's gx).
      std::vector<const void*> once;
      fastrnn_emu::prefetch_log = &once;
      fastrnn_emu::launch([](Args a) {
        const int64_t off = fastrnn::prefetch_offset_l2(a.base, a.rows, a.stride, a.span);
        if (off != fastrnn::kNoPrefetch) fastrnn::prefetch_l2(a.base + 1024 + off);
      }, 1, 64, 0, args);
      fastrnn_emu::prefetch_log = nullptr;
      std::vector<uintptr_t> want, got;
      for (const void* p : log) want.push_back(reinterpret_cast<uintptr_t>(p) + 1024);
      for (const void* p : once) got.push_back(reinterpret_cast<uintptr_t>(p));
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      if (got != want) {
        std::printf("FAIL prefetch_offset_l2 offset=%ld span=%ld: %zu hints, want %zu\n", static_cast<long>(offset),
                    static_cast<long>(span), got.size(), want.size());
        ++fastrnn_test::failures;
      }
    }
  }
}

// FlatWalk (kernels/layout.cuh), the division-free index walk of the staging and per-item
// loops, against the divisions it replaces: every start, strides below, equal to and above the
// width (several rows per step), pads from none to wide.
void check_flat_walk() {
  for (int width : {1, 3, 6, 96, 100}) {
    for (int pad : {0, 1, 8}) {
      const int ld = width + pad;
      for (int stride : {1, 5, 6, 32, 64, 256, 301}) {
        for (int start = 0; start < std::min(stride, 40); ++start) {
          fastrnn::FlatWalk w(start, stride, width, ld);
          for (int i = start; i < 4000; i += stride, w.next()) {
            if (w.col != i % width || w.row != i / width || w.pad != i / width * ld + i % width) {
              std::printf("FAIL FlatWalk width=%d ld=%d stride=%d start=%d at %d: col=%d pad=%d\n", width, ld, stride,
                          start, i, w.col, w.pad);
              ++fastrnn_test::failures;
              return;
            }
          }
        }
      }
    }
  }
}

template <typename Cell>
void run_cell(const char* name, std::mt19937& rng) {
  run_dtype<Cell, float>(name, false, rng);
  run_dtype<Cell, float>(name, true, rng);  // the TF32 mma path
  run_dtype<Cell, __nv_bfloat16>(name, false, rng);
  run_dtype<Cell, __half>(name, false, rng);
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  check_flat_walk();
  check_prefetch_tails();
  run_target_split<fastrnn::LstmCell>("lstm", rng);
  run_target_split<fastrnn::GruCell>("gru", rng);
  run_cell<fastrnn::ElmanTanhCell>("rnn_tanh", rng);
  run_cell<fastrnn::ElmanReluCell>("rnn_relu", rng);
  run_cell<fastrnn::LstmCell>("lstm", rng);
  run_cell<fastrnn::GruCell>("gru", rng);
  if (fastrnn_emu::cp_async_lost > 0) {  // a thread ended with cp.async copies it never waited for
    std::printf("FAIL: %d threads ended with cp.async copies pending\n", fastrnn_emu::cp_async_lost.load());
    ++fastrnn_test::failures;
  }
  if (fastrnn_test::failures > 0) {
    std::printf("persistent kernels (CPU emulation): %d failures\n", fastrnn_test::failures);
    return 1;
  }
  std::printf("persistent kernels (CPU emulation): all cases ok\n");
  return 0;
}
