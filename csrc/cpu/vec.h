// One SIMD vector of floats, FASTRNN_VEC_BYTES wide, as a GCC/Clang vector extension type.
//
// Included by recurrence.h inside the namespace of one instruction set (isa_*.cpp), after that
// file has set FASTRNN_VEC_BYTES and the compiler's target: the same source becomes AVX-512
// (64 bytes), AVX2 (32 bytes) or portable code (16 bytes: SSE2 on x86-64, NEON on ARM).
// Everything here has internal linkage, so the three copies never meet at link time (an
// AVX-512 copy of a shared inline function must not be picked for a CPU without AVX-512).
#pragma once

static constexpr int W = FASTRNN_VEC_BYTES / 4;  // floats per vector

typedef float vf __attribute__((vector_size(FASTRNN_VEC_BYTES)));
typedef int vi __attribute__((vector_size(FASTRNN_VEC_BYTES)));
// The same types at 4-byte alignment: loads and stores at any float address.
typedef float vf_u __attribute__((vector_size(FASTRNN_VEC_BYTES), aligned(4), may_alias));

static inline vf load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
static inline void store(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
static inline vf splat(float s) {
  // -0 + s == s for every s (so this folds to one broadcast); +0 + s is not (-0 + +0 = +0)
  // and costs an add, and a lane-by-lane fill compiles to one masked insert per lane.
  vf negative_zero = -vf{};
  return negative_zero + s;
}

// The first n (< W) floats, the rest zero: the last, partial vector of a row of H values.
static inline vf load_n(const float* p, int n) {
  if (n >= W) return load(p);
  float tmp[W] = {};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return load(tmp);
}

static inline void store_n(float* p, vf v, int n) {
  if (n >= W) {
    store(p, v);
    return;
  }
  float tmp[W];
  store(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}

static inline void zero_n(float* p, int n) {
  for (int i = 0; i < n; ++i) p[i] = 0.0f;
}

static inline void copy_n(float* dst, const float* src, int n) {
  for (int i = 0; i < n; ++i) dst[i] = src[i];
}

// a where mask (all bits set), else b; by bits, so that it needs no vector ?: support.
static inline vf select(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf vmin(vf a, vf b) { return select(a < b, a, b); }
static inline vf vmax(vf a, vf b) { return select(a > b, a, b); }
