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
#include "backend/cpu/qgemm_tile.inc"

kiln_qgemm_fn kiln_qgemm_avxvnni(kiln_dtype dt) { return lookup_avxvnni(dt); }
