/* quant_dot_avx512.c: AVX-512 quantized dot kernels (16 f32 lanes); the kernels themselves are
 * in quant_dot_simd.inc, shared with the AVX2 file. Compiled with -mavx512f/bw/vl/dq -mfma. */
#include <immintrin.h>
#include <string.h>
#include "backend/cpu/quant_impl.h"

typedef __m512 VF;
typedef __m512i VI;
#define L 16
#define FN(name) name##_avx512
#define VZERO() _mm512_setzero_ps()
#define VSET1(f) _mm512_set1_ps(f)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VFMSUB(a, b, c) _mm512_fmsub_ps(a, b, c)
#define VCVT(i) _mm512_cvtepi32_ps(i)
#define VREDUCE(v) _mm512_reduce_add_ps(v)
#define ILOAD_U8(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ILOAD_I8(p) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ISET1(k) _mm512_set1_epi32(k)
#define IAND(a, b) _mm512_and_si512(a, b)
#define IOR(a, b) _mm512_or_si512(a, b)
#define ISUB(a, b) _mm512_sub_epi32(a, b)
#define ISRLI(a, k) _mm512_srli_epi32(a, k)
#define ISLLI(a, k) _mm512_slli_epi32(a, k)
#define VPERM16(idx, tab) _mm512_permutexvar_ps(idx, tab)
/* dm = (f32) {d, m, 0 ...} from the block's two leading f16 */
#define VDM16(b, dm)                                                                          \
    do {                                                                                      \
        int32_t u_;                                                                           \
        memcpy(&u_, (b), 4);                                                                  \
        (dm) = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(u_)));                   \
    } while (0)
#define VIOTA16() _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define IBITS(v, s, mask) _mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(s)), _mm512_set1_epi32(mask))

#define QNR 6 /* 24 accumulators of the 32 zmm registers */

/* out[r * ldo] = _mm512_reduce_add_ps(S[r]) for r < nr (3..6), all at once: GCC's reduce pairs
 * lane l with l+8, then l+4, l+2, l+1; the same pairs here, in transposing shuffles (one
 * tree for all rows instead of one per row), so the same bits. */
static inline __attribute__((always_inline)) void reduce_rows(const __m512 *S, int nr, float *out, size_t ldo) {
    const __m512 z = _mm512_setzero_ps();
    __m512 P[4], R[2];
    for (int m = 0; m < 3; m++) { /* rows 2m, 2m+1: [A0 A1 B0 B1] + [A2 A3 B2 B3] = l + l+8 */
        __m512 a = S[2 * m], b = 2 * m + 1 < nr ? S[2 * m + 1] : z;
        if (2 * m >= nr) a = z;
        P[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    P[3] = z;
    for (int m = 0; m < 2; m++) /* l + l+4; chunk c of R[m] = row 4m + c */
        R[m] = _mm512_add_ps(_mm512_shuffle_f32x4(P[2 * m], P[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(P[2 * m], P[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* l + l+2: chunk c = [row c: r0 r1, row 4+c: r0 r1] */
    __m512 T = _mm512_add_ps(_mm512_shuffle_ps(R[0], R[1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(R[0], R[1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* r0 + r1: lane 4c = row c, lane 4c + 1 = row 4 + c */
    __m512 F = _mm512_add_ps(_mm512_shuffle_ps(T, T, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(T, T, _MM_SHUFFLE(3, 1, 3, 1)));
    float f[16];
    _mm512_storeu_ps(f, F);
    for (int r = 0; r < nr; r++) out[(size_t)r * ldo] = f[r < 4 ? 4 * r : 4 * (r - 4) + 1];
}
#define VREDUCE_ROWS(S, nr, out, ldo) reduce_rows(S, nr, out, ldo)
#include "backend/cpu/quant_dot_simd.inc"

kiln_dot_fn kiln_quant_dot_avx512(kiln_dtype dt) { return lookup_avx512(dt); }
kiln_dotw_fn kiln_quant_dotw_avx512(kiln_dtype dt) { return lookup_w_avx512(dt); }
