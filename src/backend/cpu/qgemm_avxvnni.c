/* qgemm_avxvnni.c: the W x A8 kernels (qgemm.h) with AVX-VNNI's 256-bit vpdpbusd (the same
 * int32 lanes as the AVX2 file's pmaddubsw + pmaddwd, so the same bits). Compiled with -mavx2
 * -mfma -mf16c -mavxvnni; used only where CPUID reports AVX-VNNI. */
#define FN(name) name##_avxvnni
#define DOT_U8S8(u, q) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, q)
#include "backend/cpu/qgemm_ymm.inc"

kiln_qgemm_fn kiln_qgemm_avxvnni(kiln_dtype dt) { return lookup_avxvnni(dt); }
