/* prefetch.h: the software prefetch of weight streams, shared by the quant dotw kernels
 * (quant_dot_simd.inc), the W x A8 tiles (qgemm_tile.inc) and the f32 multi-row dots (matmul.c).
 * Decode streams the weights from memory and the hardware prefetchers stop at 4 KB pages, so
 * each kernel asks for the bytes KILN_PF_AHEAD past the weights it is about to read. No effect on
 * any value. */
#ifndef KILN_CPU_PREFETCH_H
#define KILN_CPU_PREFETCH_H
#include <stddef.h>

#define KILN_PF_AHEAD 8192 /* measured on the quant dotw path: 2 KB 397, 4 KB 409, 8 KB 414, 16 KB 399 tok/s */

/* [p + KILN_PF_AHEAD, p + KILN_PF_AHEAD + n) into L1, one request a 64-byte line (prefetcht0 on
 * x86, prfm pldl1keep on aarch64) */
static inline void kiln_prefetch_ahead(const void *p, size_t n) {
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch((const char *)p + KILN_PF_AHEAD + o, 0, 3);
}

#endif
