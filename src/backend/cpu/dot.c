/* dot.c: portable scalar kernels (dot products, attention runs, SwiGLU), their table and the
 * one per-ISA dispatch (kiln_cpu_kernels_for, dot_internal.h) behind every kiln_cpu_*_lookup.
 *
 * Kernel contract (kernels.h): one weight row W[n] (f32, f16 or bf16, read in place) against
 * nr f32 activation rows x[r * ldx + i], writing out[r * ldo]. Every row uses the same
 * arithmetic whatever nr is: 16 partial sums (element i -> s[i % 16]), mul then add (ISO C
 * mode compiles with -ffp-contract=off, so no FMA contraction), then a halving tree
 * s[j] += s[j + w] for w = 8, 4, 2, 1. nr > 4 is processed in groups of 4 (weights re-read
 * from L1). The inner loops have independent lanes, so the compiler may vectorise them
 * without changing a single bit of the result. */
#include <math.h>
#include <string.h>
#include "backend/cpu/dot_internal.h"
#include "util/fp16.h"
#include "util/fp8.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* full unrolling keeps the accumulator arrays in registers (-O2 alone leaves them on the stack) */
#define KILN_UNROLL _Pragma("GCC unroll 16")

/* f16 -> f32 without branches on the common path: the 15 magnitude bits shifted into an f32
 * and rescaled by 2^112 is exact for normals and subnormals; exponent 31 maps to inf/NaN. */
static ALWAYS_INLINE float f16_to_f32_fast(uint16_t h) {
    uint32_t em = h & 0x7fffu, u;
    float f;
    if (em >= 0x7c00u) {
        u = (em << 13) | 0x7f800000u;
    } else {
        u = em << 13;
        memcpy(&f, &u, 4);
        f *= 0x1p112f;
        memcpy(&u, &f, 4);
    }
    u |= (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &u, 4);
    return f;
}

static ALWAYS_INLINE float load_w(const void *w, kiln_dtype dt, int i) {
    switch (dt) {
    case KILN_DT_F16: return f16_to_f32_fast(((const uint16_t *)w)[i]);
    case KILN_DT_BF16: return kiln_bf16_to_f32(((const uint16_t *)w)[i]);
    case KILN_DT_F8_E4M3: return kiln_e4m3_to_f32(((const uint8_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

static ALWAYS_INLINE void dot_body(const void *w, kiln_dtype dt, const float *x, size_t ldx,
                                   const int nr, int n, float *out, size_t ldo) {
    float s[KILN_DOT_MAX_NR][16];
    KILN_UNROLL
    for (int r = 0; r < nr; r++)
        KILN_UNROLL
        for (int j = 0; j < 16; j++) s[r][j] = 0.0f;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        float wv[16];
        KILN_UNROLL
        for (int j = 0; j < 16; j++) wv[j] = load_w(w, dt, i + j);
        KILN_UNROLL
        for (int r = 0; r < nr; r++) {
            const float *xr = x + (size_t)r * ldx + i;
            KILN_UNROLL
            for (int j = 0; j < 16; j++) s[r][j] += wv[j] * xr[j];
        }
    }
    for (; i < n; i++) {
        float wv = load_w(w, dt, i);
        KILN_UNROLL
        for (int r = 0; r < nr; r++) s[r][i & 15] += wv * x[(size_t)r * ldx + i];
    }
    KILN_UNROLL
    for (int r = 0; r < nr; r++) {
        for (int h = 8; h >= 1; h >>= 1)
            KILN_UNROLL
            for (int j = 0; j < h; j++) s[r][j] += s[r][j + h];
        out[(size_t)r * ldo] = s[r][0];
    }
}

#include "backend/cpu/dot_rows.inc"

int kiln_cpu_dot_max_rows(kiln_dtype dt, kiln_isa isa) {
    if (isa != KILN_ISA_AVX512 || !kiln_dtype_is_quant(dt)) return KILN_DOT_MAX_NR;
    /* quant_dot_avx512.c: QNR 6, QNR2 8 for the 32-element block types (dot32w) */
    return kiln_dtype_block_elems(dt) == 32 ? 8 : 6;
}

static void axpy_scalar(float *restrict o, const float *restrict v, float a, int n) {
    for (int i = 0; i < n; i++) o[i] += a * v[i];
}

static void attn_qk_scalar(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    for (int j = 0; j < nk; j++) dot_f32(k + (size_t)j * hd, q, (size_t)hd, G, hd, s + j, lds);
}
static void attn_pv_scalar(float *o, const float *p, const float *v, int nv, int hd) {
    for (int j = 0; j < nv; j++) axpy_scalar(o, v + (size_t)j * hd, p[j], hd);
}

static void attn_widen_scalar(const uint16_t *src, float *dst, int n, int bf16) {
    for (int i = 0; i < n; i++) dst[i] = kiln_half_to_f32(src[i], bf16);
}

static void attn_narrow_scalar(const float *src, uint16_t *dst, int n, int bf16) {
    for (int i = 0; i < n; i++) dst[i] = kiln_f32_to_half(src[i], bf16);
}

/* scale, max, expf, a sequential sum, one multiply by the inverse (the order of the original
 * attention loop) */
static void attn_softmax_scalar(float *x, int n, float scale) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        x[j] *= scale;
        if (x[j] > mx) mx = x[j];
    }
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) x[j] *= inv;
}

/* silu(g) * u as torch computes it, element by element (kernels.h kiln_cpu_silu_mul) */
static void silu_mul_scalar(float *out, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) out[i] = kiln_cpu_silu_mul(g[i], u[i]);
}

/* ---- the one dispatch: a table per ISA (dot_internal.h) ----------------------------------- */

const kiln_cpu_kernels kiln_cpu_kernels_scalar = {
    .isa = KILN_ISA_SCALAR,
    .dot = {[KILN_DT_F32] = dot_f32, [KILN_DT_F16] = dot_f16, [KILN_DT_BF16] = dot_bf16, [KILN_DT_F8_E4M3] = dot_f8},
    .quant_dot = kiln_quant_dot_scalar,
    .axpy = axpy_scalar,
    .attn = {attn_qk_scalar, attn_pv_scalar, attn_softmax_scalar, NULL, attn_widen_scalar, attn_narrow_scalar},
    .silu_mul = silu_mul_scalar,
};

static const kiln_cpu_kernels *const k_tables[KILN_ISA_COUNT] = {
    [KILN_ISA_SCALAR] = &kiln_cpu_kernels_scalar,
#ifdef KILN_X86
    [KILN_ISA_AVX2] = &kiln_cpu_kernels_avx2,
    [KILN_ISA_AVX512] = &kiln_cpu_kernels_avx512,
#endif
#ifdef KILN_ARM64
    [KILN_ISA_NEON] = &kiln_cpu_kernels_neon,
#endif
};

const kiln_cpu_kernels *kiln_cpu_kernels_for(kiln_isa isa) {
    if ((unsigned)isa >= KILN_ISA_COUNT || !k_tables[isa] || !kiln_isa_supported(isa)) return NULL;
    return k_tables[isa];
}

/* The kernel for (dt, isa) exactly: no fallback to another ISA here (the caller decides, see
 * kernels.h). */
kiln_dot_fn kiln_cpu_dot_lookup(kiln_dtype dt, kiln_isa isa) {
    if (kiln_dtype_is_quant(dt)) return kiln_cpu_dot_lookup_quant(dt, isa);
    const kiln_cpu_kernels *k = kiln_cpu_kernels_for(isa);
    return k && (unsigned)dt < KILN_DT_COUNT ? k->dot[dt] : NULL;
}

kiln_dot_fn kiln_cpu_dot_lookup_quant(kiln_dtype dt, kiln_isa isa) {
    const kiln_cpu_kernels *k = kiln_cpu_kernels_for(isa);
    return k && k->quant_dot ? k->quant_dot(dt) : NULL;
}

kiln_dotw_fn kiln_cpu_dotw_lookup_quant(kiln_dtype dt, kiln_isa isa) {
    const kiln_cpu_kernels *k = kiln_cpu_kernels_for(isa);
    return k && k->quant_dotw ? k->quant_dotw(dt) : NULL;
}

kiln_deq_fn kiln_cpu_deq_lookup_quant(kiln_dtype dt, kiln_isa isa, kiln_tile_fn *tile,
                                      kiln_tile_phase_fn *phase) {
    const kiln_cpu_kernels *k = kiln_cpu_kernels_for(isa);
    kiln_deq_fn d = k && k->quant_deq ? k->quant_deq(dt) : NULL;
    *tile = d ? k->tile : NULL;
    *phase = d ? k->tile_phase : NULL;
    return d;
}

int kiln_cpu_attn_lookup(kiln_isa isa, kiln_attn_kernels *k) {
    const kiln_cpu_kernels *t = kiln_cpu_kernels_for(isa);
    if (!t) return -1;
    *k = t->attn;
    return 0;
}

kiln_axpy_fn kiln_cpu_axpy_lookup(kiln_isa isa) {
    const kiln_cpu_kernels *k = kiln_cpu_kernels_for(isa);
    return k ? k->axpy : NULL;
}

void kiln_cpu_silu_mul_row(kiln_isa isa, float *out, const float *g, const float *u, int n) {
    const kiln_cpu_kernels *k = kiln_cpu_kernels_for(isa);
    (k && k->silu_mul ? k->silu_mul : silu_mul_scalar)(out, g, u, n);
}
