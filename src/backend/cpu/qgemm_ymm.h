/* qgemm_ymm.h: the 256-bit vector macros of qgemm_tile.inc, shared by qgemm_avx2.c and
 * qgemm_avxvnni.c (8 output columns per vector; they add DP / DPS / Q8_SIGNED and FN). */
#ifndef KILN_CPU_QGEMM_YMM_H
#define KILN_CPU_QGEMM_YMM_H
#include <immintrin.h>
#define LANES 8
typedef __m256i VI;
typedef __m256 VF;
#define LD128(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define LOADG(cp, g, off) \
    _mm256_inserti128_si256(_mm256_castsi128_si256(LD128(cp[2 * (g)] + (off))), LD128(cp[2 * (g) + 1] + (off)), 1)
#define UNPACKLO32(a, b) _mm256_unpacklo_epi32(a, b)
#define UNPACKHI32(a, b) _mm256_unpackhi_epi32(a, b)
#define UNPACKLO64(a, b) _mm256_unpacklo_epi64(a, b)
#define UNPACKHI64(a, b) _mm256_unpackhi_epi64(a, b)
#define GATHER32(base, idx) _mm256_i32gather_epi32((const int *)(const void *)(base), idx, 1)
/* the low 16 bits of the 8 lanes, packed into 16 bytes */
static inline __m128i kiln_qg_lo16(__m256i v) {
    const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9,
                                          12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pick), 0x08));
}
/* the low 16 bits of the 8 lanes -> f16 -> f32 */
static inline __m256 kiln_qg_cvtph_lo(__m256i v) { return _mm256_cvtph_ps(kiln_qg_lo16(v)); }
#define CVTPH_LO(v) kiln_qg_cvtph_lo(v)
#define AND(a, b) _mm256_and_si256(a, b)
#define OR(a, b) _mm256_or_si256(a, b)
#define XOR(a, b) _mm256_xor_si256(a, b)
#define SRLI16(a, k) _mm256_srli_epi16(a, k)
#define SRLI32(a, k) _mm256_srli_epi32(a, k)
#define SLLI32(a, k) _mm256_slli_epi32(a, k)
#define MULLO32(a, b) _mm256_mullo_epi32(a, b)
#define ADD32(a, b) _mm256_add_epi32(a, b)
#define SUB32(a, b) _mm256_sub_epi32(a, b)
#define SUB8(a, b) _mm256_sub_epi8(a, b)
#define LOADF(p) _mm256_loadu_ps(p)
#define SRAI32(a, k) _mm256_srai_epi32(a, k)
#define SET1_8(k) _mm256_set1_epi8((char)(k))
#define SET1_32(k) _mm256_set1_epi32(k)
#define LOADI32(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define ZEROI() _mm256_setzero_si256()
#define ZEROF() _mm256_setzero_ps()
#define CVT(v) _mm256_cvtepi32_ps(v)
#define MULF(a, b) _mm256_mul_ps(a, b)
#define ADDF(a, b) _mm256_add_ps(a, b)
#define FMAF(a, b, c) _mm256_fmadd_ps(a, b, c)
#define SET1F(f) _mm256_set1_ps(f)
#define STOREF(p, v) _mm256_storeu_ps(p, v)
/* Q6_K (both 256-bit files: faster than 256-bit vpdpbusd plus two vpmulld per block, measured):
 * the signed pair sums (|w| <= 32: <= 8128, no saturation) times the sub-block scale (s16: the
 * scale in both int16 halves) by pmaddwd, so the scales cost nothing; exact, the same int32 */
#define DPS_SCALED(acc, w, s, s16) \
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(s, w)), s16))
#endif
