/* qgemm_zmm.h: the 512-bit vector macros of qgemm_tile.inc, shared by qgemm_avx512.c and
 * qgemm_amx.c (16 output columns per vector; they add DP / DPS / Q8_SIGNED and FN). */
#ifndef KILN_CPU_QGEMM_ZMM_H
#define KILN_CPU_QGEMM_ZMM_H
#include <immintrin.h>
#define LANES 16
typedef __m512i VI;
typedef __m512 VF;
#define LD128(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define LOADG(cp, g, off)                                                                                   \
    _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(LD128(cp[4 * (g)] + (off))), \
                                                             LD128(cp[4 * (g) + 1] + (off)), 1),                 \
                                          LD128(cp[4 * (g) + 2] + (off)), 2),                                    \
                       LD128(cp[4 * (g) + 3] + (off)), 3)
#define UNPACKLO32(a, b) _mm512_unpacklo_epi32(a, b)
#define UNPACKHI32(a, b) _mm512_unpackhi_epi32(a, b)
#define UNPACKLO64(a, b) _mm512_unpacklo_epi64(a, b)
#define UNPACKHI64(a, b) _mm512_unpackhi_epi64(a, b)
#define GATHER32(base, idx) _mm512_i32gather_epi32(idx, (const void *)(base), 1)
#define CVTPH_LO(v) _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
#define AND(a, b) _mm512_and_si512(a, b)
#define OR(a, b) _mm512_or_si512(a, b)
#define XOR(a, b) _mm512_xor_si512(a, b)
#define SRLI16(a, k) _mm512_srli_epi16(a, k)
#define SRLI32(a, k) _mm512_srli_epi32(a, k)
#define SLLI32(a, k) _mm512_slli_epi32(a, k)
#define MULLO32(a, b) _mm512_mullo_epi32(a, b)
#define ADD32(a, b) _mm512_add_epi32(a, b)
#define SUB32(a, b) _mm512_sub_epi32(a, b)
#define SUB8(a, b) _mm512_sub_epi8(a, b)
#define LOADF(p) _mm512_loadu_ps(p)
#define SRAI32(a, k) _mm512_srai_epi32(a, k)
#define SET1_8(k) _mm512_set1_epi8((char)(k))
#define SET1_32(k) _mm512_set1_epi32(k)
#define LOADI32(p) _mm512_loadu_si512((const void *)(p))
#define ZEROI() _mm512_setzero_si512()
#define ZEROF() _mm512_setzero_ps()
#define CVT(v) _mm512_cvtepi32_ps(v)
#define MULF(a, b) _mm512_mul_ps(a, b)
#define ADDF(a, b) _mm512_add_ps(a, b)
#define FMAF(a, b, c) _mm512_fmadd_ps(a, b, c)
#define SET1F(f) _mm512_set1_ps(f)
#define STOREF(p, v) _mm512_storeu_ps(p, v)
#endif
