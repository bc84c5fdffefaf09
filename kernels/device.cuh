// Device-side primitives of the persistent kernels: the dynamic shared memory and the grid group.
// Compiled by nvcc they are CUDA's own; with FASTRNN_HOST_EMULATION defined
// (tests/cpp/host_emulation.h, included first) the CPU supplies threadIdx, __syncthreads,
// mma.sync (mma.cuh), grid.sync() and the block's shared memory, so the kernels' orchestration
// can be tested without a GPU.
#pragma once

#include <cstdint>

#include "layout.cuh"  // FASTRNN_LAYOUT_HD

#if !defined(FASTRNN_HOST_EMULATION)
#include <cooperative_groups.h>
#endif

namespace fastrnn {

// A hint that moves no data the kernel can see: start bringing the bytes at `p` into L2, so a load
// issued later (after the grid barrier) finds them there instead of in HBM. Under the CPU
// emulation it records the address (host_emulation.h).
__device__ __forceinline__ void prefetch_l2(const void* p) {
#if defined(FASTRNN_HOST_EMULATION)
  fastrnn_emu::record_prefetch(p);  // the tests check which sectors were hinted
#elif defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

// Number of 32-byte sectors a segment of `span` bytes starting `offset` bytes into a sector
// touches: a segment that does not start on a sector boundary reaches one sector further.
FASTRNN_LAYOUT_HD constexpr int64_t sectors_touched(int64_t offset, int64_t span) {
  return span <= 0 ? 0 : (offset % 32 + span + 31) / 32;
}

// Block-cooperative prefetch of `rows` segments of `span` bytes, row r starting at
// base + r * stride bytes: one hint per 32-byte sector a segment touches (each hint at a sector
// start, so the segment's tail sector is covered too).
__device__ __forceinline__ void prefetch_rows_l2(const void* base, int64_t rows, int64_t stride, int64_t span) {
  const char* p = static_cast<const char*>(base);
  // Row starts differ by `stride`, so each row's offset into its first sector differs: take the
  // most sectors any row needs (at most one more than the aligned count).
  const int64_t sectors = (span + 31) / 32 + 1;
  for (int64_t i = threadIdx.x; i < rows * sectors; i += blockDim.x) {
    const char* row = p + (i / sectors) * stride;
    const uintptr_t first = reinterpret_cast<uintptr_t>(row) & ~static_cast<uintptr_t>(31);
    const int64_t s = i % sectors;
    if (s < sectors_touched(static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) & 31), span)) {
      prefetch_l2(reinterpret_cast<const void*>(first + static_cast<uintptr_t>(s) * 32));
    }
  }
}

// This thread's part of prefetch_rows_l2(base, rows, stride, span) as one byte offset from
// base, for a caller that prefetches the same pattern every step at a base that moves by whole
// 32-byte sectors (then each row's offset into its first sector, and so the sectors it touches,
// are the same every step) and whose rows x sectors fit one per thread: computed once before the
// time loop, so a step spends one add and the hint instead of a division and the address
// arithmetic (~70 SASS instructions per hint, before the grid barrier). No hint for this
// thread: kNoPrefetch (an offset may be negative: a row's first sector can start before base).
constexpr int64_t kNoPrefetch = INT64_MIN;
__device__ __forceinline__ int64_t prefetch_offset_l2(const void* base, int64_t rows, int64_t stride, int64_t span) {
  const int64_t sectors = (span + 31) / 32 + 1, i = threadIdx.x;  // as prefetch_rows_l2
  if (i >= rows * sectors) return kNoPrefetch;
  const char* row = static_cast<const char*>(base) + (i / sectors) * stride;
  const int64_t into = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) & 31), s = i % sectors;
  if (s >= sectors_touched(into, span)) return kNoPrefetch;
  return (row - static_cast<const char*>(base)) - into + s * 32;
}

// 16 bytes global -> shared without passing through registers (cp.async.cg: cached in L2 only,
// so data other blocks wrote is seen after the grid barrier). The thread continues at once: all
// of its copies are in flight together, and cp_async_wait_all() waits for them (other threads'
// copies: __syncthreads() after that). Both addresses 16-byte aligned. Under the CPU emulation
// the copy is deferred until the wait (host_emulation.h), so a missing wait shows as a read of
// poisoned shared memory.
__device__ __forceinline__ void cp_async16_cg(void* smem_dst, const void* gmem_src) {
#if defined(FASTRNN_HOST_EMULATION)
  fastrnn_emu::cp_async16(smem_dst, gmem_src);
#elif defined(__CUDA_ARCH__)
  const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src) : "memory");
#else
  (void)smem_dst, (void)gmem_src;
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#if defined(FASTRNN_HOST_EMULATION)
  fastrnn_emu::cp_async_wait_all();
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

#if !defined(FASTRNN_HOST_EMULATION)
// The block's dynamic shared memory (size given at launch).
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char fastrnn_dynamic_smem[];
  return fastrnn_dynamic_smem;
}
#endif

}  // namespace fastrnn
