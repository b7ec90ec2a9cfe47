/* dot_avx512.c: AVX-512 (F, BW, VL, DQ) dot-product kernels.
 *
 * One weight row W[n] against nr <= 4 f32 rows. Per row: 4 accumulators of 16 lanes (64
 * partial sums, element i -> acc[(i / 16) % 4] lane i % 16) updated with FMA; weights are
 * converted in registers (bf16: zero-extend and shift into the high half; f16: vcvtph2ps),
 * each converted vector serves all nr rows (16 accumulators fit the 32 zmm registers).
 * The tail (n % 64) runs as up to 4 more 16-lane chunks with zeroing masked loads.
 * Reduction: (a0 + a1) + (a2 + a3), high 256 + low 256, high 128 + low 128, then a fixed
 * shuffle tree. The arithmetic of a row is the same whatever nr is. */
#include <immintrin.h>
#include "backend/cpu/dot_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* full unrolling keeps the accumulator arrays in registers (-O2 alone leaves them on the stack) */
#define KILN_UNROLL _Pragma("GCC unroll 16")

/* 16 e4m3 codes (zero-extended to 16 bits) -> f32: the f16 with the same exponent and mantissa
 * bits moved up (exact, subnormals included) times 2^8 */
static ALWAYS_INLINE __m512 f8_16(__m256i v) {
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x7f)), 7),
                                _mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x80)), 8));
    return _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
}

static ALWAYS_INLINE __m512 load16(const void *w, kiln_dtype dt, int i) {
    switch (dt) {
    case KILN_DT_BF16: {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case KILN_DT_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    case KILN_DT_F8_E4M3: return f8_16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)((const uint8_t *)w + i))));
    default: return _mm512_loadu_ps((const float *)w + i);
    }
}

static ALWAYS_INLINE __m512 load16_mask(const void *w, kiln_dtype dt, int i, __mmask16 m) {
    switch (dt) {
    case KILN_DT_BF16: {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case KILN_DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
    case KILN_DT_F8_E4M3: return f8_16(_mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, (const uint8_t *)w + i)));
    default: return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    }
}

static ALWAYS_INLINE float hsum(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

static ALWAYS_INLINE void dot_body(const void *w, kiln_dtype dt, const float *x, size_t ldx,
                                   const int nr, int n, float *out, size_t ldo) {
    __m512 acc[KILN_DOT_MAX_NR][4];
    KILN_UNROLL
    for (int r = 0; r < nr; r++)
        KILN_UNROLL
        for (int k = 0; k < 4; k++) acc[r][k] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        KILN_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512 wk = load16(w, dt, i + 16 * k);
            KILN_UNROLL
            for (int r = 0; r < nr; r++)
                acc[r][k] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(x + (size_t)r * ldx + i + 16 * k), acc[r][k]);
        }
    }
    for (int k = 0; k < 4 && i < n; k++, i += 16) {
        int m = n - i < 16 ? n - i : 16;
        __mmask16 mk = (__mmask16)((1u << m) - 1u);
        __m512 wk = load16_mask(w, dt, i, mk);
        KILN_UNROLL
        for (int r = 0; r < nr; r++)
            acc[r][k] = _mm512_fmadd_ps(wk, _mm512_maskz_loadu_ps(mk, x + (size_t)r * ldx + i), acc[r][k]);
    }
    KILN_UNROLL
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = hsum(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

#include "backend/cpu/dot_rows.inc"


void kiln_cpu_axpy_avx512(float *restrict o, const float *restrict v, float a, int n) {
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(o + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(v + i), _mm512_loadu_ps(o + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(o + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, v + i), _mm512_maskz_loadu_ps(m, o + i)));
    }
}

/* One step of qk_tree: V and W each hold 16 / (2h) groups of 2h partial sums; the result holds
 * twice the groups, each half as wide: in every 2h-lane segment, the first h lanes are
 * V[l] + V[l + h] and the last h are W[l - h] + W[l] (the same pairs for both: an add is
 * commutative). One two-source permute, one blend and one add. */
static ALWAYS_INLINE __m512 tree_step(__m512 V, __m512 W, __m512i idx, __mmask16 second) {
    return _mm512_add_ps(_mm512_mask_blend_ps(second, V, W), _mm512_permutex2var_ps(V, idx, W));
}

/* The 16 keys' scores of a block from S[u] (key u's 16 partial sums): lane u of the result is
 * ((S_l + S_l+8) + (S_l+4 + S_l+12)) + ... : the halving tree l + l+8, l + l+4, l + l+2,
 * l + l+1 on each key's own lanes (no lane of another key, so each score's bits depend only on
 * its key and query). */
static ALWAYS_INLINE __m512 qk_tree(const __m512 S[16]) {
    /* idx per level h: lane l of a 2h-segment takes V[l + h] (first half) or W[l - h] (second) */
    const __m512i i8 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i i4 = _mm512_setr_epi32(4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 24, 25, 26, 27);
    const __m512i i2 = _mm512_setr_epi32(2, 3, 16, 17, 6, 7, 20, 21, 10, 11, 24, 25, 14, 15, 28, 29);
    const __m512i i1 = _mm512_setr_epi32(1, 16, 3, 18, 5, 20, 7, 22, 9, 24, 11, 26, 13, 28, 15, 30);
    __m512 P[8], R[4], T[2];
#pragma GCC unroll 8
    for (int m = 0; m < 8; m++) P[m] = tree_step(S[2 * m], S[2 * m + 1], i8, 0xff00);
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) R[m] = tree_step(P[2 * m], P[2 * m + 1], i4, 0xf0f0);
#pragma GCC unroll 2
    for (int m = 0; m < 2; m++) T[m] = tree_step(R[2 * m], R[2 * m + 1], i2, 0xcccc);
    __m512 F = tree_step(T[0], T[1], i1, 0xaaaa);
    /* F lane l holds key perm[l]: P[m] = keys 2m (lanes 0-7), 2m+1 (8-15); each level
     * interleaves, so lane l = 8 b0 + 4 b1 + 2 b2 + b3 holds key 8 b3 + 4 b2 + 2 b1 + b0 */
    const __m512i rev = _mm512_setr_epi32(0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
    return _mm512_permutexvar_ps(rev, F);
}

/* key u's 16 partial sums against one query (q0..q3: its 4 vectors): lane l is
 * fma(k[48+l], q[48+l], fma(k[32+l], q[32+l], fma(k[16+l], q[16+l], k[l] * q[l]))) */
static ALWAYS_INLINE __m512 qk_partial(const float *kj, __m512 q0, __m512 q1, __m512 q2, __m512 q3) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(kj), q0);
    a = _mm512_fmadd_ps(_mm512_loadu_ps(kj + 16), q1, a);
    a = _mm512_fmadd_ps(_mm512_loadu_ps(kj + 32), q2, a);
    return _mm512_fmadd_ps(_mm512_loadu_ps(kj + 48), q3, a);
}

/* Attention scores over a run of keys: s[i * lds + j] = k_j . q_i for j < nk, i < G.
 * head_dim 64 (G <= 4): per score qk_partial then qk_tree (16 keys per tree; a tail of
 * fewer keys runs the same tree with zero vectors for the missing keys and a masked store, so
 * a score's bits do not depend on where its run starts or ends, let alone on the batch).
 * Other shapes: the f32 dot kernel per score (dot_internal.h's order). */
void kiln_cpu_attn_qk_avx512(const float *k, int nk, const float *q, int G, int hd, float *s, size_t lds) {
    if (hd != 64 || G > KILN_DOT_MAX_NR) {
        for (int j = 0; j < nk; j++) dot_rows(k + (size_t)j * hd, KILN_DT_F32, q, (size_t)hd, G, hd, s + j, lds);
        return;
    }
    for (int i = 0; i < G; i++) {
        const float *qi = q + (size_t)i * 64;
        __m512 q0 = _mm512_loadu_ps(qi), q1 = _mm512_loadu_ps(qi + 16);
        __m512 q2 = _mm512_loadu_ps(qi + 32), q3 = _mm512_loadu_ps(qi + 48);
        float *si = s + (size_t)i * lds;
        int j = 0;
        for (; j + 16 <= nk; j += 16) {
            __m512 S[16];
#pragma GCC unroll 16
            for (int u = 0; u < 16; u++) S[u] = qk_partial(k + (size_t)(j + u) * 64, q0, q1, q2, q3);
            _mm512_storeu_ps(si + j, qk_tree(S));
        }
        if (j < nk) {
            __m512 S[16];
            for (int u = 0; u < 16; u++)
                S[u] = j + u < nk ? qk_partial(k + (size_t)(j + u) * 64, q0, q1, q2, q3) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(si + j, (__mmask16)((1u << (nk - j)) - 1u), qk_tree(S));
        }
    }
}

/* o[d] = fma(p[j], v_j[d], o[d]) for j = 0..nv-1 in order (exactly nv kiln_cpu_axpy_avx512
 * calls), v rows contiguous [nv][hd]; o is held in registers over the run, 64 lanes at a time. */
void kiln_cpu_attn_pv_avx512(float *o, const float *p, const float *v, int nv, int hd) {
    int d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m512 o0 = _mm512_loadu_ps(o + d), o1 = _mm512_loadu_ps(o + d + 16);
        __m512 o2 = _mm512_loadu_ps(o + d + 32), o3 = _mm512_loadu_ps(o + d + 48);
        for (int j = 0; j < nv; j++) {
            const float *vj = v + (size_t)j * hd + d;
            __m512 a = _mm512_set1_ps(p[j]);
            o0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(vj), o0);
            o1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(vj + 16), o1);
            o2 = _mm512_fmadd_ps(a, _mm512_loadu_ps(vj + 32), o2);
            o3 = _mm512_fmadd_ps(a, _mm512_loadu_ps(vj + 48), o3);
        }
        _mm512_storeu_ps(o + d, o0);
        _mm512_storeu_ps(o + d + 16, o1);
        _mm512_storeu_ps(o + d + 32, o2);
        _mm512_storeu_ps(o + d + 48, o3);
    }
    if (d < hd)
        for (int j = 0; j < nv; j++) kiln_cpu_axpy_avx512(o + d, v + (size_t)j * hd + d, p[j], hd - d);
}

/* G heads sharing a run of values: o_i[d] = fma(p_i[j], v_j[d], o_i[d]) for j in order, i < G
 * (o_i = o + i * ldo, p_i = p + i * ldp): per head exactly kiln_cpu_attn_pv_avx512, so the
 * same bits; head_dim 64 and G <= 4: the G heads' outputs stay in registers together
 * (4 G independent fma chains instead of 4: pv is latency-bound) and each value row is
 * loaded once for all heads. */
static ALWAYS_INLINE void pvg64(float *o, size_t ldo, const float *p, size_t ldp, int G, const float *v, int nv) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < G; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) acc[i][c] = _mm512_loadu_ps(o + (size_t)i * ldo + 16 * c);
    for (int j = 0; j < nv; j++) {
        const float *vj = v + (size_t)j * 64;
        __m512 v0 = _mm512_loadu_ps(vj), v1 = _mm512_loadu_ps(vj + 16);
        __m512 v2 = _mm512_loadu_ps(vj + 32), v3 = _mm512_loadu_ps(vj + 48);
#pragma GCC unroll 4
        for (int i = 0; i < G; i++) {
            __m512 a = _mm512_set1_ps(p[(size_t)i * ldp + j]);
            acc[i][0] = _mm512_fmadd_ps(a, v0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, v1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(a, v2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(a, v3, acc[i][3]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < G; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + (size_t)i * ldo + 16 * c, acc[i][c]);
}

void kiln_cpu_attn_pvg_avx512(float *o, size_t ldo, const float *p, size_t ldp, int G, const float *v, int nv,
                              int hd) {
    switch (hd == 64 ? G : 0) {
    case 1: pvg64(o, ldo, p, ldp, 1, v, nv); break;
    case 2: pvg64(o, ldo, p, ldp, 2, v, nv); break;
    case 3: pvg64(o, ldo, p, ldp, 3, v, nv); break;
    case 4: pvg64(o, ldo, p, ldp, 4, v, nv); break;
    default:
        for (int i = 0; i < G; i++) kiln_cpu_attn_pv_avx512(o + (size_t)i * ldo, p + (size_t)i * ldp, v, nv, hd);
    }
}

/* e^x for x <= 0 (lanes below -104 give 0): x = n ln2 + r, |r| <= ln2 / 2 (ln2 split in two
 * so n ln2 is exact), e^r by its degree-7 Taylor polynomial (truncation < 6e-9 relative),
 * times 2^n by vscalefps (which rounds a subnormal result once). About 1 ulp. */
static ALWAYS_INLINE __m512 exp_core(__m512 x) { /* x already clamped to [-104, 89] */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
static ALWAYS_INLINE __m512 exp_neg(__m512 x) {
    return exp_core(_mm512_max_ps(x, _mm512_set1_ps(-104.0f))); /* also maps -inf to e^-104 = 0 */
}

/* x[j] = softmax(scale * x)[j], j < n: scaled scores and their max, e^(s - max) (exp_neg),
 * their sum in 16 lanes (element j -> lane j % 16, masked zeros past n) folded by hsum, then
 * one multiply by 1 / sum. Fixed order for a given n. */
void kiln_cpu_attn_softmax_avx512(float *x, int n, float scale) {
    __m512 vs = _mm512_set1_ps(scale), mx = _mm512_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + j), vs);
        _mm512_storeu_ps(x + j, v);
        mx = _mm512_max_ps(mx, v);
    }
    __mmask16 tail = (__mmask16)((1u << (n - j)) - 1u);
    if (j < n) {
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + j), vs);
        _mm512_mask_storeu_ps(x + j, tail, v);
        mx = _mm512_mask_max_ps(mx, tail, mx, v);
    }
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(x + j), m));
        _mm512_storeu_ps(x + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (j < n) {
        __m512 e = _mm512_maskz_mov_ps(tail, exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + j), m)));
        _mm512_mask_storeu_ps(x + j, tail, e);
        sum = _mm512_add_ps(sum, e);
    }
    const __m512 z = _mm512_setzero_ps();
    __m512 inv = _mm512_set1_ps(1.0f / hsum(sum, z, z, z));
    for (j = 0; j + 16 <= n; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), inv));
    if (j < n) _mm512_mask_storeu_ps(x + j, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + j), inv));
}

/* out[i] = silu(g[i]) * u[i] = g / (1 + e^-g) * u (kiln_cpu_silu_mul's expression) for i < n,
 * 16 at a time, the tail by masked lanes (every element the same function, wherever it sits).
 * e^x: exp_neg's reduction and polynomial over x clamped to [-104, 89] (about 1 ulp; above 89
 * 2^n overflows to inf, as expf does past 88.7, and g / inf is -0). out may alias g. */
static ALWAYS_INLINE __m512 silu_mul16(__m512 g, __m512 u) {
    __m512 x = _mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), g), _mm512_set1_ps(89.0f));
    __m512 e = exp_core(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

void kiln_cpu_silu_mul_avx512(float *out, const float *g, const float *u, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, silu_mul16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, m, silu_mul16(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

/* The AVX-512 kernels (dot_internal.h); dot.c's kiln_cpu_kernels_for picks this table. */
const kiln_cpu_kernels kiln_cpu_kernels_avx512 = {
    .isa = KILN_ISA_AVX512,
    .dot = {[KILN_DT_F32] = dot_f32, [KILN_DT_F16] = dot_f16, [KILN_DT_BF16] = dot_bf16, [KILN_DT_F8_E4M3] = dot_f8},
    .quant_dot = kiln_quant_dot_avx512,
    .quant_dotw = kiln_quant_dotw_avx512,
    .quant_deq = kiln_quant_deq_avx512,
    .tile = kiln_quant_tile_avx512,
    .tile_phase = kiln_quant_tile_phase_avx512,
    .axpy = kiln_cpu_axpy_avx512,
    .attn = {kiln_cpu_attn_qk_avx512, kiln_cpu_attn_pv_avx512, kiln_cpu_attn_softmax_avx512, kiln_cpu_attn_pvg_avx512},
    .silu_mul = kiln_cpu_silu_mul_avx512,
};
