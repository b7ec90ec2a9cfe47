/* quant_dot.c: GGUF quantized weights on the CPU: the scalar dot kernels over the format layer's
 * block dequantization (format/quant.h). The AVX2 / AVX-512 kernels live in quant_dot_avx2.c /
 * _avx512.c, generated from quant_dot_simd.inc; dot.c's kernel tables (dot_internal.h) pick
 * between them. Block layouts are described in quant_impl.h.
 *
 * Dequantization does, per element, exactly the f32 operations of GGML's reference (and of
 * the gguf Python package): e.g. Q4_K x = (d*sc)*q - (dmin*mn), each product rounded to f32
 * (this file is compiled as ISO C, so no FMA contraction), so it is bit-exact with them.
 * The scalar dot kernel dequantizes one block into a buffer and accumulates, per activation
 * row, the block's partial sum into a running f32 total: same order whatever nr is.
 */
#include <string.h>
#include "backend/cpu/quant_impl.h"
#include "format/quant.h"

/* ---- scalar dot: one block at a time ---------------------------------------------------- */

static inline void dot_scalar(kiln_dequant_block_fn f, int be, int bb, const void *wrow, const float *x,
                              size_t ldx, int nr, int n, float *out, size_t ldo) {
    float buf[256], acc[4] = {0, 0, 0, 0};
    const uint8_t *b = wrow;
    for (int i0 = 0; i0 < n; i0 += be, b += bb) {
        f(b, buf);
        for (int r = 0; r < nr; r++) {
            const float *xr = x + (size_t)r * ldx + i0;
            float s[4] = {0, 0, 0, 0};
            for (int i = 0; i < be; i += 4) {
                s[0] += buf[i] * xr[i];
                s[1] += buf[i + 1] * xr[i + 1];
                s[2] += buf[i + 2] * xr[i + 2];
                s[3] += buf[i + 3] * xr[i + 3];
            }
            acc[r] += (s[0] + s[1]) + (s[2] + s[3]);
        }
    }
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = acc[r];
}

#define SCALAR_DOT(name, dt, be, bb)                                                          \
    static void name(const void *w, const float *x, size_t ldx, int nr, int n, float *out,  \
                     size_t ldo) {                                                          \
        dot_scalar(kiln_dequant_block(dt), be, bb, w, x, ldx, nr, n, out, ldo);                               \
    }
SCALAR_DOT(dot_q8_0, KILN_DT_Q8_0, 32, 34)
SCALAR_DOT(dot_q4_0, KILN_DT_Q4_0, 32, 18)
SCALAR_DOT(dot_q4_1, KILN_DT_Q4_1, 32, 20)
SCALAR_DOT(dot_q5_0, KILN_DT_Q5_0, 32, 22)
SCALAR_DOT(dot_q5_1, KILN_DT_Q5_1, 32, 24)
SCALAR_DOT(dot_q4_k, KILN_DT_Q4_K, 256, 144)
SCALAR_DOT(dot_q5_k, KILN_DT_Q5_K, 256, 176)
SCALAR_DOT(dot_q6_k, KILN_DT_Q6_K, 256, 210)

/* the scalar table's quant_dot (dot.c) */
kiln_dot_fn kiln_quant_dot_scalar(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return dot_q8_0;
    case KILN_DT_Q4_0: return dot_q4_0;
    case KILN_DT_Q4_1: return dot_q4_1;
    case KILN_DT_Q5_0: return dot_q5_0;
    case KILN_DT_Q5_1: return dot_q5_1;
    case KILN_DT_Q4_K: return dot_q4_k;
    case KILN_DT_Q5_K: return dot_q5_k;
    case KILN_DT_Q6_K: return dot_q6_k;
    default: return NULL;
    }
}
