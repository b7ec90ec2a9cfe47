/* dot_neon.c: Advanced SIMD (NEON) kernels, the aarch64 baseline (no -march flag): dense dot
 * products, axpy and the attention kernels; the quant dot kernels are in quant_dot_neon.c.
 *
 * Dot: one weight row W[n] against nr <= 4 f32 rows. Per row 4 accumulators of 4 lanes (16
 * partial sums, element i -> acc[(i / 4) % 4] lane i % 4) updated with fused multiply-add
 * (vfmaq_f32): 4 independent chains per row hide the FMA latency (16 accumulators at nr = 4,
 * of the 32 vector registers). Weights are converted in registers, 16 at a time, each vector
 * used for all nr rows: bf16 by a widening shift into the high half (shll #16), f16 by
 * vcvt_f32_f16 (fcvtl: exact, subnormals included), E4M3 through the f16 with the same
 * exponent and mantissa bits moved up, times 2^8 (exact; as the x86 files). The tail (n % 16)
 * is converted exactly into a zero-padded 16-float buffer (the x rows too) and run as one more
 * step: 0 * 0 added to a partial sum changes nothing. Reduction: (a0 + a1) + (a2 + a3), then
 * lanes (l0 + l2) + (l1 + l3). The arithmetic of a row is the same whatever nr is.
 * Attention (kernels.h): qk by 4-key pairwise-add trees at any head_dim that is a multiple of
 * 4, pv / pvg with the outputs held in registers over the run, a vector-exp softmax. */
#include <arm_neon.h>
#include <math.h>
#include <string.h>
#include "backend/cpu/dot_internal.h"
#include "util/fp16.h"
#include "util/fp8.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* full unrolling keeps the accumulator arrays in registers (-O2 alone leaves them on the stack) */
#define KILN_UNROLL _Pragma("GCC unroll 16")

/* 8 E4M3 codes (zero-extended to 16 bits) -> the f16 with the same bits moved, as f32 x 2^8 */
static ALWAYS_INLINE void f8_8(uint16x8_t v, float32x4_t *lo, float32x4_t *hi) {
    uint16x8_t h = vorrq_u16(vshlq_n_u16(vandq_u16(v, vdupq_n_u16(0x7f)), 7),
                             vshlq_n_u16(vandq_u16(v, vdupq_n_u16(0x80)), 8));
    float16x8_t f = vreinterpretq_f16_u16(h);
    *lo = vmulq_f32(vcvt_f32_f16(vget_low_f16(f)), vdupq_n_f32(256.0f));
    *hi = vmulq_f32(vcvt_high_f32_f16(f), vdupq_n_f32(256.0f));
}

/* weights i .. i+15 as 4 f32 vectors */
static ALWAYS_INLINE void load16(const void *w, kiln_dtype dt, int i, float32x4_t wv[4]) {
    switch (dt) {
    case KILN_DT_BF16: {
        const uint16_t *h = (const uint16_t *)w + i;
        uint16x8_t a = vld1q_u16(h), b = vld1q_u16(h + 8);
        wv[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(a), 16));
        wv[1] = vreinterpretq_f32_u32(vshll_high_n_u16(a, 16));
        wv[2] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b), 16));
        wv[3] = vreinterpretq_f32_u32(vshll_high_n_u16(b, 16));
        break;
    }
    case KILN_DT_F16: {
        const uint16_t *h = (const uint16_t *)w + i;
        float16x8_t a = vreinterpretq_f16_u16(vld1q_u16(h)), b = vreinterpretq_f16_u16(vld1q_u16(h + 8));
        wv[0] = vcvt_f32_f16(vget_low_f16(a));
        wv[1] = vcvt_high_f32_f16(a);
        wv[2] = vcvt_f32_f16(vget_low_f16(b));
        wv[3] = vcvt_high_f32_f16(b);
        break;
    }
    case KILN_DT_F8_E4M3: {
        uint8x16_t v = vld1q_u8((const uint8_t *)w + i);
        f8_8(vmovl_u8(vget_low_u8(v)), &wv[0], &wv[1]);
        f8_8(vmovl_high_u8(v), &wv[2], &wv[3]);
        break;
    }
    default:
        KILN_UNROLL
        for (int k = 0; k < 4; k++) wv[k] = vld1q_f32((const float *)w + i + 4 * k);
    }
}

/* (l0 + l2) + (l1 + l3) */
static ALWAYS_INLINE float hsum4(float32x4_t s) {
    float32x2_t t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}

static ALWAYS_INLINE void step16(float32x4_t acc[][4], const float32x4_t wv[4], const float *x, size_t ldx,
                                 int xi, const int nr) {
    KILN_UNROLL
    for (int k = 0; k < 4; k++)
        KILN_UNROLL
        for (int r = 0; r < nr; r++)
            acc[r][k] = vfmaq_f32(acc[r][k], wv[k], vld1q_f32(x + (size_t)r * ldx + xi + 4 * k));
}

static ALWAYS_INLINE void dot_body(const void *w, kiln_dtype dt, const float *x, size_t ldx,
                                   const int nr, int n, float *out, size_t ldo) {
    float32x4_t acc[KILN_DOT_MAX_NR][4], wv[4];
    KILN_UNROLL
    for (int r = 0; r < nr; r++)
        KILN_UNROLL
        for (int k = 0; k < 4; k++) acc[r][k] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        load16(w, dt, i, wv);
        step16(acc, wv, x, ldx, i, nr);
    }
    if (i < n) {
        float wt[16], xt[KILN_DOT_MAX_NR][16];
        kiln_dot_tail_stage(w, dt, i, n - i, x, ldx, nr, wt, &xt[0][0], 16);
        load16(wt, KILN_DT_F32, 0, wv);
        step16(acc, wv, &xt[0][0], 16, 0, nr);
    }
    KILN_UNROLL
    for (int r = 0; r < nr; r++)
        out[(size_t)r * ldo] = hsum4(vaddq_f32(vaddq_f32(acc[r][0], acc[r][1]), vaddq_f32(acc[r][2], acc[r][3])));
}

#include "backend/cpu/dot_rows.inc"

/* o[i] = fma(a, v[i], o[i]): one fused multiply-add per element, vector or scalar (fmaf is
 * fmadd on aarch64), so the bits depend on nothing but the element */
static void axpy_neon(float *restrict o, const float *restrict v, float a, int n) {
    float32x4_t va = vdupq_n_f32(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        KILN_UNROLL
        for (int k = 0; k < 4; k++)
            vst1q_f32(o + i + 4 * k, vfmaq_f32(vld1q_f32(o + i + 4 * k), va, vld1q_f32(v + i + 4 * k)));
    for (; i + 4 <= n; i += 4) vst1q_f32(o + i, vfmaq_f32(vld1q_f32(o + i), va, vld1q_f32(v + i)));
    for (; i < n; i++) o[i] = fmaf(a, v[i], o[i]);
}

/* ---- attention ------------------------------------------------------------------------ */

/* Scores of up to 8 keys (nk8 of them, the others zero) against one query q[hd], hd % 4 == 0:
 * lane l of key u's vector is the fma chain over k_u[4c + l] q[4c + l], c = 0, 1 .. in order
 * (8 independent chains: the latency of one is hidden by the others); then per key the
 * pairwise adds (l0 + l1) + (l2 + l3), 4 keys to a vector. A key's bits depend only on k_u and
 * q, not on nk8 or the key's place in the block. */
static ALWAYS_INLINE void qk8(const float *k, int nk8, const float *q, int hd, float *s) {
    float32x4_t S[8];
    KILN_UNROLL
    for (int u = 0; u < 8; u++) S[u] = vdupq_n_f32(0.0f);
    if (nk8 == 8) {
        for (int c = 0; c < hd; c += 4) {
            float32x4_t qv = vld1q_f32(q + c);
            KILN_UNROLL
            for (int u = 0; u < 8; u++) S[u] = vfmaq_f32(S[u], vld1q_f32(k + (size_t)u * hd + c), qv);
        }
    } else { /* a run's tail: the same chains for the keys there are */
        for (int c = 0; c < hd; c += 4) {
            float32x4_t qv = vld1q_f32(q + c);
            KILN_UNROLL
            for (int u = 0; u < 8; u++)
                if (u < nk8) S[u] = vfmaq_f32(S[u], vld1q_f32(k + (size_t)u * hd + c), qv);
        }
    }
    float32x4_t lo = vpaddq_f32(vpaddq_f32(S[0], S[1]), vpaddq_f32(S[2], S[3]));
    float32x4_t hi = vpaddq_f32(vpaddq_f32(S[4], S[5]), vpaddq_f32(S[6], S[7]));
    if (nk8 == 8) {
        vst1q_f32(s, lo);
        vst1q_f32(s + 4, hi);
    } else {
        float t[8];
        vst1q_f32(t, lo);
        vst1q_f32(t + 4, hi);
        memcpy(s, t, sizeof(float) * (size_t)nk8);
    }
}

/* s[i * lds + j] = k_j . q_i (kernels.h): hd % 4 == 0 by qk8 per head and block of 8 keys;
 * other head_dims by the dot kernel per score */
static void attn_qk_neon(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    if (hd % 4 != 0) {
        for (int j = 0; j < nk; j++) dot_f32(k + (size_t)j * hd, q, (size_t)hd, G, hd, s + j, lds);
        return;
    }
    for (int i = 0; i < G; i++)
        for (int j = 0; j < nk; j += 8)
            qk8(k + (size_t)j * hd, nk - j < 8 ? nk - j : 8, q + (size_t)i * hd, hd, s + (size_t)i * lds + j);
}

static void attn_widen_neon(const uint16_t *src, float *dst, int n, int bf16) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint16x4_t h = vld1_u16(src + i);
        vst1q_f32(dst + i, bf16 ? vreinterpretq_f32_u32(vshll_n_u16(h, 16)) : vcvt_f32_f16(vreinterpret_f16_u16(h)));
    }
    for (; i < n; i++) dst[i] = kiln_half_to_f32(src[i], bf16);
}

/* f16: fcvtn, round to nearest even (the scalar's rounding); bf16: the scalar conversion */
static void attn_narrow_neon(const float *src, uint16_t *dst, int n, int bf16) {
    int i = 0;
    if (!bf16)
        for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = kiln_f32_to_half(src[i], bf16);
}

/* G heads' outputs, nc vectors each (G nc <= 16 accumulators), held in registers over a run of
 * values: o_i[d] = fma(p_i[j], v_j[d], o_i[d]) for j in order, each value vector loaded once
 * for the G heads. o_i = o + i ldo, p_i = p + i ldp, value rows ldv floats apart. */
static ALWAYS_INLINE void pv_regs(float *o, size_t ldo, const float *p, size_t ldp, const int G, const float *v,
                                  size_t ldv, int nv, const int nc) {
    float32x4_t acc[4][16];
    KILN_UNROLL
    for (int i = 0; i < G; i++)
        KILN_UNROLL
        for (int c = 0; c < nc; c++) acc[i][c] = vld1q_f32(o + (size_t)i * ldo + 4 * c);
    for (int j = 0; j < nv; j++) {
        const float *vj = v + (size_t)j * ldv;
        KILN_UNROLL
        for (int c = 0; c < nc; c++) {
            float32x4_t vv = vld1q_f32(vj + 4 * c);
            KILN_UNROLL
            for (int i = 0; i < G; i++) acc[i][c] = vfmaq_f32(acc[i][c], vdupq_n_f32(p[(size_t)i * ldp + j]), vv);
        }
    }
    KILN_UNROLL
    for (int i = 0; i < G; i++)
        KILN_UNROLL
        for (int c = 0; c < nc; c++) vst1q_f32(o + (size_t)i * ldo + 4 * c, acc[i][c]);
}

/* G (1..4) heads over columns [0, w) of the value rows: 16 accumulators per pass (64 columns
 * for one head, 32 for two, 16 for three or four: the fma latency hidden by 12-16 independent
 * chains), then 4 columns, then one by one (fmaf); every element is the same fma chain in j
 * order whatever pass computes it. */
static ALWAYS_INLINE void pv_span(float *o, size_t ldo, const float *p, size_t ldp, const int G, const float *v,
                                  size_t ldv, int nv, int w) {
    const int nc = G == 1 ? 16 : G == 2 ? 8 : 4;
    int d = 0;
    for (; d + 4 * nc <= w; d += 4 * nc) pv_regs(o + d, ldo, p, ldp, G, v + d, ldv, nv, nc);
    for (; d + 4 <= w; d += 4) pv_regs(o + d, ldo, p, ldp, G, v + d, ldv, nv, 1);
    for (; d < w; d++)
        for (int i = 0; i < G; i++)
            for (int j = 0; j < nv; j++)
                o[(size_t)i * ldo + d] = fmaf(p[(size_t)i * ldp + j], v[(size_t)j * ldv + d], o[(size_t)i * ldo + d]);
}

/* pv: o[d] = fma(p[j], v_j[d], o[d]) for j in order (the bits of nv axpy_neon calls) */
static void attn_pv_neon(float *o, const float *p, const float *v, int nv, int hd) {
    pv_span(o, 0, p, 0, 1, v, (size_t)hd, nv, hd);
}

/* pvg: G heads sharing the values, 4 heads at a time (16 accumulators), per head the bits of
 * attn_pv_neon */
static void attn_pvg_neon(float *o, size_t ldo, const float *p, size_t ldp, int G, const float *v, int nv, int hd) {
    int i = 0;
    for (; i + 4 <= G; i += 4) pv_span(o + (size_t)i * ldo, ldo, p + (size_t)i * ldp, ldp, 4, v, (size_t)hd, nv, hd);
    switch (G - i) {
    case 1: pv_span(o + (size_t)i * ldo, ldo, p + (size_t)i * ldp, ldp, 1, v, (size_t)hd, nv, hd); break;
    case 2: pv_span(o + (size_t)i * ldo, ldo, p + (size_t)i * ldp, ldp, 2, v, (size_t)hd, nv, hd); break;
    case 3: pv_span(o + (size_t)i * ldo, ldo, p + (size_t)i * ldp, ldp, 3, v, (size_t)hd, nv, hd); break;
    default: break;
    }
}

/* e^x for x <= 0, as dot_avx2.c's exp_neg8: x = n ln2 + r (ln2 in two parts), e^r by the
 * degree-7 Taylor polynomial, times 2^n built in the exponent field; x < -87 (and -inf, NaN)
 * gives 0, below 2e-38 of the result (softmax: the max's term is 1). About 1 ulp. */
static ALWAYS_INLINE float32x4_t exp_neg4(float32x4_t x) {
    uint32x4_t keep = vcgeq_f32(x, vdupq_n_f32(-87.0f));
    x = vmaxq_f32(x, vdupq_n_f32(-87.0f));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f));
    r = vfmsq_f32(r, n, vdupq_n_f32(1.428606765330187045e-06f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), keep));
}

/* x[j] = softmax(scale * x)[j], j < n: scaled scores and their max, e^(s - max) (exp_neg4),
 * their sum in 4 lanes (element j -> lane j % 4; the tail padded with e^-inf = 0) folded by
 * hsum4, then one multiply by 1 / sum. Fixed order for a given n. */
static void attn_softmax_neon(float *x, int n, float scale) {
    float32x4_t vs = vdupq_n_f32(scale), vmx = vdupq_n_f32(-INFINITY);
    int j = 0;
    for (; j + 4 <= n; j += 4) { /* max is exact: any order gives the same value */
        float32x4_t v = vmulq_f32(vld1q_f32(x + j), vs);
        vst1q_f32(x + j, v);
        vmx = vmaxq_f32(vmx, v);
    }
    float mx = vmaxvq_f32(vmx);
    for (; j < n; j++) {
        x[j] *= scale;
        if (x[j] > mx) mx = x[j];
    }
    float32x4_t m = vdupq_n_f32(mx), sum = vdupq_n_f32(0.0f);
    for (j = 0; j + 4 <= n; j += 4) {
        float32x4_t e = exp_neg4(vsubq_f32(vld1q_f32(x + j), m));
        vst1q_f32(x + j, e);
        sum = vaddq_f32(sum, e);
    }
    if (j < n) {
        float t[4];
        for (int u = 0; u < 4; u++) t[u] = j + u < n ? x[j + u] : -INFINITY;
        float32x4_t e = exp_neg4(vsubq_f32(vld1q_f32(t), m));
        vst1q_f32(t, e);
        memcpy(x + j, t, sizeof(float) * (size_t)(n - j));
        sum = vaddq_f32(sum, e);
    }
    float inv = 1.0f / hsum4(sum);
    float32x4_t vinv = vdupq_n_f32(inv);
    for (j = 0; j + 4 <= n; j += 4) vst1q_f32(x + j, vmulq_f32(vld1q_f32(x + j), vinv));
    for (; j < n; j++) x[j] *= inv;
}

/* The NEON kernels (dot_internal.h); dot.c's kiln_cpu_kernels_for picks this table. No quant
 * prefill pair (its tile contract is AVX-512's 16-lane layout), no vector SwiGLU: NULL. */
const kiln_cpu_kernels kiln_cpu_kernels_neon = {
    .isa = KILN_ISA_NEON,
    .dot = {[KILN_DT_F32] = dot_f32, [KILN_DT_F16] = dot_f16, [KILN_DT_BF16] = dot_bf16, [KILN_DT_F8_E4M3] = dot_f8},
    .quant_dot = kiln_quant_dot_neon,
    .quant_dotw = kiln_quant_dotw_neon,
    .axpy = axpy_neon,
    .attn = {attn_qk_neon, attn_pv_neon, attn_softmax_neon, attn_pvg_neon, attn_widen_neon, attn_narrow_neon},
};
