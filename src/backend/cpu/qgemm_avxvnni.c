/* qgemm_avxvnni.c: the W x A8 kernels (qgemm.h, qgemm_tile.inc) with AVX-VNNI's 256-bit
 * vpdpbusd, 8 output columns per vector (the same integers as the AVX2 file's, so the same
 * bits). Compiled with -mavx2 -mfma -mf16c -mavxvnni; used only where CPUID reports AVX-VNNI. */
#include "backend/cpu/qgemm_ymm.h"
#define FN(name) name##_avxvnni
#define Q8_SIGNED 0
#define QG_KOUTER /* 16 registers: NRT sums, NRT accumulators, a weight vector, a broadcast */
#define NRT 6
#define DP(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define DPS(acc, u, s) DP(acc, u, s)
#define QG_PACKED /* weights packed once (kiln_qgemm_pack_fn), not transposed per call */
#define PK_ONCE_ROWS 4 /* 16 registers: more rows' tiles spill the 8 weight vectors */
#define STOREI(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define STORE_H16(p, v) _mm_storeu_si128((__m128i *)(void *)(p), kiln_qg_lo16(v))
#define CVTPH_H16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_avxvnni(kiln_dtype dt) { return lookup_avxvnni(dt); }
int kiln_qgemm_avxvnni_packed(kiln_dtype dt, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn) {
    return lookup_packed_avxvnni(dt, pack, fn);
}
