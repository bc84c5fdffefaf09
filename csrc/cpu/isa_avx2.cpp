// recurrence.h for CPUs with AVX2 and FMA: 8 floats a vector, 16 vector registers.
// host.cpp calls it only where the CPU reports these features at run time.
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#endif
#define FASTRNN_ISA avx2
#define FASTRNN_VEC_BYTES 32
#define FASTRNN_ACCUMULATORS 12  // of 16 registers
#include "recurrence.h"
#if (defined(__x86_64__) || defined(__i386__)) && defined(__clang__)
#pragma clang attribute pop
#endif
