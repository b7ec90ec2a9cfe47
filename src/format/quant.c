/* quant.c: scalar dequantization of GGUF blocks (layouts in quant.h).
 *
 * Dequantization does, per element, exactly the f32 operations of GGML's reference (and of
 * the gguf Python package): e.g. Q4_K x = (d*sc)*q - (dmin*mn), each product rounded to f32
 * (this file is compiled as ISO C, so no FMA contraction), so it is bit-exact with them.
 */
#include "format/quant.h"
#include <string.h>
#include "kiln.h"
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
static void deq_q5_0(const uint8_t *b, float *y) { /* y[32] */
    float d = h2f(b);
    uint32_t qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
    const uint8_t *q = b + 6;
    for (int i = 0; i < 16; i++) {
        int h0 = (int)((qh >> i) & 1) << 4, h1 = (int)((qh >> (i + 16)) & 1) << 4;
        y[i] = d * (float)(((q[i] & 15) | h0) - 16);
        y[i + 16] = d * (float)(((q[i] >> 4) | h1) - 16);
    }
}
static void deq_q5_1(const uint8_t *b, float *y) { /* y[32] */
    float d = h2f(b), m = h2f(b + 2);
    uint32_t qh = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
    const uint8_t *q = b + 8;
    for (int i = 0; i < 16; i++) {
        int h0 = (int)((qh >> i) & 1) << 4, h1 = (int)((qh >> (i + 16)) & 1) << 4;
        y[i] = d * (float)((q[i] & 15) | h0) + m;
        y[i + 16] = d * (float)((q[i] >> 4) | h1) + m;
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

kiln_dequant_block_fn kiln_dequant_block(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_Q8_0: return deq_q8_0;
    case KILN_DT_Q4_0: return deq_q4_0;
    case KILN_DT_Q4_1: return deq_q4_1;
    case KILN_DT_Q5_0: return deq_q5_0;
    case KILN_DT_Q5_1: return deq_q5_1;
    case KILN_DT_Q4_K: return deq_q4_k;
    case KILN_DT_Q5_K: return deq_q5_k;
    case KILN_DT_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

int kiln_dequant_row(kiln_dtype dt, const void *row, int64_t n, float *out) {
    kiln_dequant_block_fn f = kiln_dequant_block(dt);
    int be = kiln_dtype_block_elems(dt), bb = kiln_dtype_block_bytes(dt);
    if (!f || n < 0 || n % be) return -1;
    const uint8_t *b = row;
    for (int64_t i = 0; i < n / be; i++) f(b + i * bb, out + i * be);
    return 0;
}


int kiln_row_to_f32(kiln_dtype dt, const void *row, int64_t n, float *out) {
    if (n < 0) return KILN_ERR_INVALID_ARG;
    switch (dt) {
    case KILN_DT_F32:
        memcpy(out, row, (size_t)n * sizeof(float));
        return KILN_OK;
    case KILN_DT_F16: {
        const uint16_t *h = row;
        for (int64_t i = 0; i < n; i++) out[i] = kiln_f16_to_f32(h[i]);
        return KILN_OK;
    }
    case KILN_DT_BF16: {
        const uint16_t *h = row;
        for (int64_t i = 0; i < n; i++) out[i] = kiln_bf16_to_f32(h[i]);
        return KILN_OK;
    }
    default:
        if (kiln_dtype_is_quant(dt)) {
            int rc = kiln_dequant_row(dt, row, n, out); /* 0, a status, or -1: unsupported */
            return rc == 0 ? KILN_OK : rc > 0 ? rc : KILN_ERR_UNSUPPORTED;
        }
        return KILN_ERR_UNSUPPORTED;
    }
}
