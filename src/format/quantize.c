/* quantize.c: f32 -> GGUF blocks (quantize.h has the methods and what they are checked
 * against). Written for kiln from the formats' definitions (quant.h) and the published
 * descriptions of GGML's reference quantizers; no third-party code. */
#include "format/quantize.h"
#include <math.h>
#include <string.h>
#include "format/quant.h"
#include "util/fp16.h"

static void put_f16(uint8_t *p, float f) {
    uint16_t h = kiln_f32_to_f16(f);
    memcpy(p, &h, 2);
}
static float get_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return kiln_f16_to_f32(h);
}
/* round half away from zero (roundf), as GGML's Q8_0 and gguf's np_roundf */
static int round_away(float v) { return (int)roundf(v); }
/* round half to even, for the K-quants' searches */
static int near_int(float v) { return (int)lrintf(v); }
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- 32-element types ---------------------------------------------------------------------- */

static void q8_0_block(const float *x, uint8_t *b) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int i = 0; i < 32; i++) b[2 + i] = (uint8_t)(int8_t)round_away(x[i] * id);
}

/* the element of largest magnitude, signed (the first such) */
static float signed_absmax(const float *x) {
    float amax = 0, v = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            v = x[i];
        }
    return v;
}

/* symmetric 4- or 5-bit: d = max / -half, q = trunc(x / d + half + 0.5) in [0, 2 half) */
static void sym_quants(const float *x, int half, float *d_out, int *q) {
    float d = signed_absmax(x) / (float)-half, id = d != 0 ? 1.0f / d : 0.0f;
    float off = (float)half + 0.5f;
    for (int i = 0; i < 32; i++) q[i] = clampi((int)truncf(x[i] * id + off), 0, 2 * half - 1);
    *d_out = d;
}
/* asymmetric: d = (max - min) / qmax, q = trunc((x - min) / d + 0.5) in [0, qmax] */
static void asym_quants(const float *x, int qmax, float *d_out, float *m_out, int *q) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < 32; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    float d = (mx - mn) / (float)qmax, id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++) q[i] = clampi((int)truncf((x[i] - mn) * id + 0.5f), 0, qmax);
    *d_out = d;
    *m_out = mn;
}
static void pack_nibbles(const int *q, uint8_t *qs) {
    for (int i = 0; i < 16; i++) qs[i] = (uint8_t)((q[i] & 15) | (q[i + 16] & 15) << 4);
}
static void pack_qh(const int *q, uint8_t *qh) {
    uint32_t h = 0;
    for (int i = 0; i < 32; i++) h |= (uint32_t)((q[i] >> 4) & 1) << i;
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> (8 * k));
}

static void q4_0_block(const float *x, uint8_t *b) {
    float d;
    int q[32];
    sym_quants(x, 8, &d, q);
    put_f16(b, d);
    pack_nibbles(q, b + 2);
}
static void q5_0_block(const float *x, uint8_t *b) {
    float d;
    int q[32];
    sym_quants(x, 16, &d, q);
    put_f16(b, d);
    pack_qh(q, b + 2);
    pack_nibbles(q, b + 6);
}
static void q4_1_block(const float *x, uint8_t *b) {
    float d, m;
    int q[32];
    asym_quants(x, 15, &d, &m, q);
    put_f16(b, d);
    put_f16(b + 2, m);
    pack_nibbles(q, b + 4);
}
static void q5_1_block(const float *x, uint8_t *b) {
    float d, m;
    int q[32];
    asym_quants(x, 31, &d, &m, q);
    put_f16(b, d);
    put_f16(b + 2, m);
    pack_qh(q, b + 4);
    pack_nibbles(q, b + 8);
}

/* ---- Q4_K / Q5_K ----------------------------------------------------------------------------- */

/* Fit x[n] ~ s * q - m (q in [0, qmax], s >= 0, m >= 0 (the fitted offset is <= 0)) minimising
 * sum w (s q - m - x)^2: for each candidate inverse scale (qmax + rmin + k rdelta) / (max - min),
 * k < nstep, round q, then solve the 2x2 weighted least squares for s and the offset, keep the
 * best. Returns s; *m_out = m; q_out[n] the quants of the best fit. */
static float fit_affine(const float *x, const float *w, int n, int qmax, float rmin, float rdelta,
                        int nstep, int *q_out, float *m_out) {
    float lo = x[0], hi = x[0], sw = 0, swx = 0;
    for (int i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0) lo = 0; /* the offset is a non-positive shift: m = -lo >= 0 */
    if (hi == lo) {
        for (int i = 0; i < n; i++) q_out[i] = 0;
        *m_out = -lo;
        return 0;
    }
    /* the plain min/max rounding is the starting point */
    float inv = (float)qmax / (hi - lo), s = 1.0f / inv, off = lo, best = 0;
    for (int i = 0; i < n; i++) {
        q_out[i] = clampi(near_int(inv * (x[i] - lo)), 0, qmax);
        float e = s * (float)q_out[i] + off - x[i];
        best += w[i] * e * e;
    }
    int qt[256];
    for (int k = 0; k < nstep; k++) {
        float iv = ((float)qmax + rmin + rdelta * (float)k) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(near_int(iv * (x[i] - lo)), 0, qmax);
            qt[i] = l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        float det = sw * sl2 - sl * sl;
        if (!(det > 0)) continue;
        float ts = (sw * sxl - swx * sl) / det, to = (sl2 * swx - sl * sxl) / det;
        if (to > 0) { /* offsets must not be positive: refit the scale alone */
            to = 0;
            ts = sxl / sl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = ts * (float)qt[i] + to - x[i];
            err += w[i] * e * e;
        }
        if (err < best) {
            best = err;
            s = ts;
            off = to;
            memcpy(q_out, qt, sizeof(int) * (size_t)n);
        }
    }
    *m_out = -off;
    return s;
}

static void pack_scale_min(uint8_t *s, int j, int sc, int mn) {
    if (j < 4) {
        s[j] = (uint8_t)((s[j] & 0xc0) | sc);
        s[j + 4] = (uint8_t)((s[j + 4] & 0xc0) | mn);
    } else {
        s[j + 4] = (uint8_t)((sc & 15) | (mn & 15) << 4);
        s[j - 4] |= (uint8_t)((sc >> 4) << 6);
        s[j] |= (uint8_t)((mn >> 4) << 6);
    }
}

/* one 256 block of Q4_K (qmax 15) or Q5_K (qmax 31) */
static void qk_block(const float *x, uint8_t *b, int qmax) {
    float scale[8], mins[8], w[32], max_s = 0, max_m = 0;
    int q[256];
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float ss = 0;
        for (int i = 0; i < 32; i++) ss += xs[i] * xs[i];
        float rms = sqrtf(ss / 32);
        for (int i = 0; i < 32; i++) w[i] = rms + fabsf(xs[i]);
        if (qmax == 15) scale[j] = fit_affine(xs, w, 32, 15, -1.0f, 0.1f, 20, q + 32 * j, &mins[j]);
        else scale[j] = fit_affine(xs, w, 32, 31, -0.5f, 0.1f, 15, q + 32 * j, &mins[j]);
        max_s = scale[j] > max_s ? scale[j] : max_s;
        max_m = mins[j] > max_m ? mins[j] : max_m;
    }
    memset(b, 0, (size_t)(qmax == 15 ? 144 : 176));
    uint8_t *sb = b + 4;
    float is = max_s > 0 ? 63.0f / max_s : 0, im = max_m > 0 ? 63.0f / max_m : 0;
    for (int j = 0; j < 8; j++)
        pack_scale_min(sb, j, clampi(near_int(is * scale[j]), 0, 63), clampi(near_int(im * mins[j]), 0, 63));
    put_f16(b, max_s / 63.0f);
    put_f16(b + 2, max_m / 63.0f);
    /* the quants against the scales as stored */
    float d = get_f16(b), dmin = get_f16(b + 2);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        kiln_qk_scale_min(sb, j, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        for (int i = 0; i < 32; i++)
            q[32 * j + i] = ds != 0 ? clampi(near_int((x[32 * j + i] + dm) / ds), 0, qmax) : 0;
    }
    uint8_t *qs = b + (qmax == 15 ? 16 : 48), *qh = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int a = q[64 * c + l], e = q[64 * c + 32 + l];
            qs[32 * c + l] = (uint8_t)((a & 15) | (e & 15) << 4);
            if (qmax == 31) qh[l] |= (uint8_t)(((a >> 4) & 1) << (2 * c) | ((e >> 4) & 1) << (2 * c + 1));
        }
}

/* ---- Q6_K ------------------------------------------------------------------------------------- */

/* Fit x[16] ~ s * q, q in [-32, 31], weights x^2: candidate inverse scales -(32 + 0.1 k) / v
 * (v the element of largest magnitude, signed), k in -9..9; keep the one with the best
 * weighted least-squares scale (largest (sum w x q)^2 / sum w q^2). Returns s (may be
 * negative: its sign is v's opposite). */
static float fit_sym16(const float *x) {
    float amax = 0, v = 0;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            v = x[i];
        }
    if (amax < 1e-15f) return 0;
    float best_s = 0, best = -1;
    for (int k = -9; k <= 9; k++) {
        float iv = -(32.0f + 0.1f * (float)k) / v, sxl = 0, sl2 = 0;
        for (int i = 0; i < 16; i++) {
            int l = clampi(near_int(iv * x[i]), -32, 31);
            float wi = x[i] * x[i];
            sxl += wi * x[i] * (float)l;
            sl2 += wi * (float)l * (float)l;
        }
        if (sl2 > 0 && (best < 0 || sxl * sxl > best * sl2)) {
            best_s = sxl / sl2;
            best = best_s * sxl;
        }
    }
    return best < 0 ? -v / 32.0f : best_s;
}

static void q6_k_block(const float *x, uint8_t *b) {
    float sc[16], max_abs = 0, max_s = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = fit_sym16(x + 16 * j);
        if (fabsf(sc[j]) > max_abs) {
            max_abs = fabsf(sc[j]);
            max_s = sc[j];
        }
    }
    memset(b, 0, 210);
    if (max_abs < 1e-15f) return;
    float iscale = -128.0f / max_s; /* the largest scale maps to -128 (int8's full range) */
    put_f16(b + 208, 1.0f / iscale);
    int8_t *ys = (int8_t *)(b + 192);
    for (int j = 0; j < 16; j++) ys[j] = (int8_t)clampi(near_int(iscale * sc[j]), -128, 127);
    float d = get_f16(b + 208);
    int q[256];
    for (int j = 0; j < 16; j++) {
        float ds = d * (float)ys[j];
        for (int i = 0; i < 16; i++) q[16 * j + i] = (ds != 0 ? clampi(near_int(x[16 * j + i] / ds), -32, 31) : 0) + 32;
    }
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
        const int *L = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((L[l] & 15) | (L[l + 64] & 15) << 4);
            ql[l + 32] = (uint8_t)((L[l + 32] & 15) | (L[l + 96] & 15) << 4);
            qh[l] = (uint8_t)((L[l] >> 4) | (L[l + 32] >> 4) << 2 | (L[l + 64] >> 4) << 4 | (L[l + 96] >> 4) << 6);
        }
    }
}

/* ---- rows ------------------------------------------------------------------------------------ */

int kiln_quantize_row(kiln_dtype dt, const float *x, int64_t n, void *out) {
    if (n < 0) return -1;
    uint8_t *o = out;
    switch (dt) {
    case KILN_DT_F32: memcpy(out, x, (size_t)n * 4); return 0;
    case KILN_DT_F16:
    case KILN_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = dt == KILN_DT_F16 ? kiln_f32_to_f16(x[i]) : kiln_f32_to_bf16(x[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        return 0;
    default: break;
    }
    void (*f)(const float *, uint8_t *) = NULL;
    switch (dt) {
    case KILN_DT_Q8_0: f = q8_0_block; break;
    case KILN_DT_Q4_0: f = q4_0_block; break;
    case KILN_DT_Q4_1: f = q4_1_block; break;
    case KILN_DT_Q5_0: f = q5_0_block; break;
    case KILN_DT_Q5_1: f = q5_1_block; break;
    case KILN_DT_Q6_K: f = q6_k_block; break;
    case KILN_DT_Q4_K:
    case KILN_DT_Q5_K: break;
    default: return -1;
    }
    int be = kiln_dtype_block_elems(dt), bb = kiln_dtype_block_bytes(dt);
    if (n % be) return -1;
    for (int64_t i = 0; i < n / be; i++) {
        if (f) f(x + i * be, o + i * bb);
        else qk_block(x + i * be, o + i * bb, dt == KILN_DT_Q4_K ? 15 : 31);
    }
    return 0;
}

int kiln_quantize_rows(kiln_dtype dt, const float *x, int64_t rows, int64_t cols, void *out) {
    size_t rb = kiln_dtype_row_bytes(dt, cols);
    if (rows < 0 || (rb == 0 && cols > 0)) return -1;
    for (int64_t r = 0; r < rows; r++)
        if (kiln_quantize_row(dt, x + r * cols, cols, (uint8_t *)out + (size_t)r * rb)) return -1;
    return 0;
}
