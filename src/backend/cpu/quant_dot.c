/* quant_dot.c: GGUF quantized weights on the CPU: scalar dequantization and dot kernels, and
 * the per-ISA dispatch (the AVX2 / AVX-512 kernels live in quant_dot_avx2.c / _avx512.c,
 * generated from quant_dot_simd.inc). Block layouts are described in quant_impl.h.
 *
 * Dequantization does, per element, exactly the f32 operations of GGML's reference (and of
 * the gguf Python package): e.g. Q4_K x = (d*sc)*q - (dmin*mn), each product rounded to f32
 * (this file is compiled as ISO C, so no FMA contraction), so it is bit-exact with them.
 * The scalar dot kernel dequantizes one block into a buffer and accumulates, per activation
 * row, the block's partial sum into a running f32 total: same order whatever nr is.
 */
#include <string.h>
#include "backend/cpu/kernels.h"
#include "backend/cpu/quant_impl.h"
#include "util/fp16.h"

static float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return kiln_f16_to_f32(h);
}

/* ---- one block -> f32 ----------------------------------------------------------------- */

static void deq_q8_0(const uint8_t *b, float *y) { /* y[32] */
    float d = h2f(b);
    const int8_t *q = (const int8_t *)(b + 2);
    for (int i = 0; i < 32; i++) y[i] = d * (float)q[i];
}
static void deq_q4_0(const uint8_t *b, float *y) { /* y[32] */
    float d = h2f(b);
    const uint8_t *q = b + 2;
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)((q[i] & 15) - 8);
        y[i + 16] = d * (float)((q[i] >> 4) - 8);
    }
}
static void deq_q4_1(const uint8_t *b, float *y) { /* y[32] */
    float d = h2f(b), m = h2f(b + 2);
    const uint8_t *q = b + 4;
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)(q[i] & 15) + m;
        y[i + 16] = d * (float)(q[i] >> 4) + m;
    }
}
static void deq_q4_k(const uint8_t *b, float *y) { /* y[256] */
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *s = b + 4, *q = b + 16;
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        int sc0, mn0, sc1, mn1;
        kiln_qk_scale_min(s, 2 * c, &sc0, &mn0);
        kiln_qk_scale_min(s, 2 * c + 1, &sc1, &mn1);
        float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
        float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
        for (int l = 0; l < 32; l++) {
            y[l] = d0 * (float)(q[l] & 15) - m0;
            y[l + 32] = d1 * (float)(q[l] >> 4) - m1;
        }
    }
}
static void deq_q5_k(const uint8_t *b, float *y) { /* y[256] */
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *s = b + 4, *qh = b + 16, *q = b + 48;
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        int sc0, mn0, sc1, mn1;
        kiln_qk_scale_min(s, 2 * c, &sc0, &mn0);
        kiln_qk_scale_min(s, 2 * c + 1, &sc1, &mn1);
        float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
        float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
        for (int l = 0; l < 32; l++) {
            int h0 = ((qh[l] >> (2 * c)) & 1) << 4, h1 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            y[l] = d0 * (float)((q[l] & 15) | h0) - m0;
            y[l + 32] = d1 * (float)((q[l] >> 4) | h1) - m1;
        }
    }
}
static void deq_q6_k(const uint8_t *b, float *y) { /* y[256] */
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            int q0 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q1 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            int is = l / 16;
            y[l] = (d * (float)sc[is + 0]) * (float)q0;
            y[l + 32] = (d * (float)sc[is + 2]) * (float)q1;
            y[l + 64] = (d * (float)sc[is + 4]) * (float)q2;
            y[l + 96] = (d * (float)sc[is + 6]) * (float)q3;
        }
    }
}

typedef void (*deq_fn)(const uint8_t *b, float *y);
static deq_fn deq_lookup(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return deq_q8_0;
    case KILN_DT_Q4_0: return deq_q4_0;
    case KILN_DT_Q4_1: return deq_q4_1;
    case KILN_DT_Q4_K: return deq_q4_k;
    case KILN_DT_Q5_K: return deq_q5_k;
    case KILN_DT_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

int kiln_cpu_dequant_row(kiln_dtype dt, const void *row, int64_t n, float *out) {
    deq_fn f = deq_lookup(dt);
    int be = kiln_dtype_block_elems(dt), bb = kiln_dtype_block_bytes(dt);
    if (!f || n < 0 || n % be) return -1;
    const uint8_t *b = row;
    for (int64_t i = 0; i < n / be; i++) f(b + i * bb, out + i * be);
    return 0;
}

/* ---- scalar dot: one block at a time ---------------------------------------------------- */

static inline void dot_scalar(deq_fn f, int be, int bb, const void *wrow, const float *x,
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

#define SCALAR_DOT(name, fn, be, bb)                                                          \
    static void name(const void *w, const float *x, size_t ldx, int nr, int n, float *out,  \
                     size_t ldo) {                                                          \
        dot_scalar(fn, be, bb, w, x, ldx, nr, n, out, ldo);                                 \
    }
SCALAR_DOT(dot_q8_0, deq_q8_0, 32, 34)
SCALAR_DOT(dot_q4_0, deq_q4_0, 32, 18)
SCALAR_DOT(dot_q4_1, deq_q4_1, 32, 20)
SCALAR_DOT(dot_q4_k, deq_q4_k, 256, 144)
SCALAR_DOT(dot_q5_k, deq_q5_k, 256, 176)
SCALAR_DOT(dot_q6_k, deq_q6_k, 256, 210)

static kiln_dot_fn scalar_lookup(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return dot_q8_0;
    case KILN_DT_Q4_0: return dot_q4_0;
    case KILN_DT_Q4_1: return dot_q4_1;
    case KILN_DT_Q4_K: return dot_q4_k;
    case KILN_DT_Q5_K: return dot_q5_k;
    case KILN_DT_Q6_K: return dot_q6_k;
    default: return NULL;
    }
}

/* The kernel for (dt, isa) exactly: no fallback here (the caller decides, see kernels.h).
 * Whether the CPU supports isa is the caller's business too. */
kiln_dot_fn kiln_cpu_dot_lookup_quant(kiln_dtype dt, kiln_isa isa) {
    switch (isa) {
    case KILN_ISA_SCALAR: return scalar_lookup(dt);
#ifdef KILN_X86
    case KILN_ISA_AVX2: return kiln_quant_dot_avx2(dt);
    case KILN_ISA_AVX512: return kiln_quant_dot_avx512(dt);
#endif
    default: return NULL;
    }
}

kiln_dotw_fn kiln_cpu_dotw_lookup_quant(kiln_dtype dt, kiln_isa isa) {
    switch (isa) {
#ifdef KILN_X86
    case KILN_ISA_AVX2: return kiln_quant_dotw_avx2(dt);
    case KILN_ISA_AVX512: return kiln_quant_dotw_avx512(dt);
#endif
    default: (void)dt; return NULL;
    }
}

kiln_deq_fn kiln_cpu_deq_lookup_quant(kiln_dtype dt, kiln_isa isa, kiln_tile_fn *tile,
                                      kiln_tile_phase_fn *phase) {
    *tile = NULL;
    *phase = NULL;
    switch (isa) {
#ifdef KILN_X86
    case KILN_ISA_AVX512: {
        kiln_deq_fn d = kiln_quant_deq_avx512(dt);
        if (d) {
            *tile = kiln_quant_tile_avx512();
            *phase = kiln_quant_tile_phase_avx512();
        }
        return d;
    }
#endif
    default: (void)dt; return NULL;
    }
}
