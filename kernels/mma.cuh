// Warp-wide tensor-core multiply-accumulates with fp32 accumulators (sm_80 and newer, including
// sm_90a). All 32 lanes of the warp must call them together.
//
// mma_16x8x16: D (16x8) += A (16x16) . B (16x8), A and B in bf16 or fp16
// (PTX mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32).
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 and q = lane % 4; each 32-bit register holds two consecutive-k elements, the
// lower k in the low half:
//   a[0] = A[g][2q, 2q+1]      a[1] = A[g+8][2q, 2q+1]
//   a[2] = A[g][2q+8, 2q+9]    a[3] = A[g+8][2q+8, 2q+9]
//   b[0] = B[2q, 2q+1][g]      b[1] = B[2q+8, 2q+9][g]          (B "col": k-contiguous per column)
//   d[0], d[1] = D[g][2q, 2q+1]          d[2], d[3] = D[g+8][2q, 2q+1]
//
// mma_16x8x8_tf32: D (16x8) += A (16x8) . B (8x8), fp32 operands rounded to TF32 (to_tf32:
// round to nearest, ties away from zero, as cvt.rna.tf32.f32) (PTX mma.sync.aligned.m16n8k8.row
// .col.f32.tf32.tf32.f32). One element per register:
//   a[0] = A[g][q]    a[1] = A[g+8][q]    a[2] = A[g][q+4]    a[3] = A[g+8][q+4]
//   b[0] = B[q][g]    b[1] = B[q+4][g]    d as for mma_16x8x16.
// tests/cpp/host_emulation.h implements the same contract on the CPU, and tests/cpp/test_mma.cu
// checks the instruction against a plain loop on a GPU.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "dtype.cuh"

namespace fastrnn {

// Storage types that run on tensor cores; fp32 takes the FMA path (block_product.cuh).
template <typename T>
constexpr bool kTensorCoreType = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Two consecutive 16-bit elements (p must be 4-byte aligned) as one 32-bit register.
template <typename T>
__device__ __forceinline__ uint32_t load_pair(const T* p) {
#if defined(FASTRNN_HOST_EMULATION)
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
#else
  return *reinterpret_cast<const uint32_t*>(p);
#endif
}

template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(kTensorCoreType<T>, "mma_16x8x16 takes __half or __nv_bfloat16");
#if defined(FASTRNN_HOST_EMULATION)
  fastrnn_emu::mma_m16n8k16<T>(d, a, b);
#elif defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ < 800
#error "fastrnn's CUDA kernels need sm_80 or newer (mma.sync m16n8k16 with bf16)"
#endif
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8x8 matrices of 16-bit elements from shared
// memory, warp-wide. Lane 8*i + r gives the address of row r of matrix i (16 contiguous bytes,
// 16-byte aligned); every lane receives, for each matrix i, the pair of elements at row
// lane / 4, columns 2 * (lane % 4) and + 1 in r[i] (lower column in the low half): exactly an
// mma fragment register (see the layouts above). One instruction replaces four 32-bit shared
// loads per lane. All 32 lanes must call it together.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(FASTRNN_HOST_EMULATION)
  fastrnn_emu::ldmatrix_x4(r, row);
#elif defined(__CUDA_ARCH__)
  const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  (void)r, (void)row;
#endif
}

__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(FASTRNN_HOST_EMULATION)
  return fastrnn_emu::to_tf32(x);
#elif defined(__CUDA_ARCH__)
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  return 0u;  // host pass: never called
#endif
}

__device__ __forceinline__ void mma_16x8x8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(FASTRNN_HOST_EMULATION)
  fastrnn_emu::mma_m16n8k8_tf32(d, a, b);
#elif defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

}  // namespace fastrnn
