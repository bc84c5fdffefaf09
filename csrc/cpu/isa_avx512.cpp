// recurrence.h for CPUs with AVX-512 (F, DQ, BW, VL): 16 floats a vector, 32 vector registers.
// host.cpp calls it only where the CPU reports these features at run time.
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#endif
#endif
#define FASTRNN_ISA avx512
#define FASTRNN_VEC_BYTES 64
#define FASTRNN_ACCUMULATORS 24  // of 32 registers; the rest hold weights and broadcasts
#include "recurrence.h"
#if (defined(__x86_64__) || defined(__i386__)) && defined(__clang__)
#pragma clang attribute pop
#endif
