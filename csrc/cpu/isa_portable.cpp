// recurrence.h for any CPU the compiler targets by default: 4 floats a vector (SSE2 on x86-64,
// NEON on ARM64, scalar code elsewhere), 12 accumulators (16 registers on x86-64).
#define FASTRNN_ISA portable
#define FASTRNN_VEC_BYTES 16
#define FASTRNN_ACCUMULATORS 12
#include "recurrence.h"
