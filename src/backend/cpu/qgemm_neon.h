/* qgemm_neon.h: the 128-bit NEON vector macros of qgemm_tile.inc, shared by qgemm_neon.c (plain
 * Advanced SIMD, the ARMv8-A baseline) and qgemm_neondot.c (the dot-product extension, sdot):
 * 4 output columns per vector (lane p = column p), the transposition by zip1 / zip2, the block
 * scale gather as 4 scalar loads (NEON has no gather). The weights' integers are signed-safe
 * (nibbles <= 31, Q8_0 kept signed: Q8_SIGNED), so one signed dot product (DP) serves every
 * type; the files add DP and FN. Bits: the lanes hold exact int32 sums, then qgemm.h's f32
 * steps (vfmaq_f32 is the fused multiply-add), the same as every other path. */
#ifndef KILN_CPU_QGEMM_NEON_H
#define KILN_CPU_QGEMM_NEON_H
#include <arm_neon.h>
#include <string.h>
#define LANES 4
#define Q8_SIGNED 1
typedef int32x4_t VI;
typedef float32x4_t VF;
#define LOADG(cp, g, off) vreinterpretq_s32_u8(vld1q_u8((cp)[g] + (off)))
#define UNPACKLO32(a, b) vzip1q_s32(a, b)
#define UNPACKHI32(a, b) vzip2q_s32(a, b)
#define UNPACKLO64(a, b) \
    vreinterpretq_s32_s64(vzip1q_s64(vreinterpretq_s64_s32(a), vreinterpretq_s64_s32(b)))
#define UNPACKHI64(a, b) \
    vreinterpretq_s32_s64(vzip2q_s64(vreinterpretq_s64_s32(a), vreinterpretq_s64_s32(b)))
/* 4 unaligned 32-bit words at base + idx[l] */
static inline int32x4_t kiln_qg_neon_gather(const uint8_t *base, int32x4_t idx) {
    int32_t i[4], v[4];
    vst1q_s32(i, idx);
    for (int l = 0; l < 4; l++) memcpy(&v[l], base + i[l], 4);
    return vld1q_s32(v);
}
#define GATHER32(base, idx) kiln_qg_neon_gather((const uint8_t *)(const void *)(base), idx)
#define CVTPH_LO(v) vcvt_f32_f16(vreinterpret_f16_u16(vmovn_u32(vreinterpretq_u32_s32(v))))
#define AND(a, b) vandq_s32(a, b)
#define OR(a, b) vorrq_s32(a, b)
#define XOR(a, b) veorq_s32(a, b)
#define SRLI16(a, k) vreinterpretq_s32_u16(vshlq_u16(vreinterpretq_u16_s32(a), vdupq_n_s16((int16_t)-(k))))
#define SRLI32(a, k) vreinterpretq_s32_u32(vshlq_u32(vreinterpretq_u32_s32(a), vdupq_n_s32(-(k))))
#define SLLI32(a, k) vshlq_s32(a, vdupq_n_s32(k))
#define MULLO32(a, b) vmulq_s32(a, b)
#define ADD32(a, b) vaddq_s32(a, b)
#define SUB32(a, b) vsubq_s32(a, b)
#define SUB8(a, b) vreinterpretq_s32_s8(vsubq_s8(vreinterpretq_s8_s32(a), vreinterpretq_s8_s32(b)))
#define LOADF(p) vld1q_f32(p)
#define SRAI32(a, k) vshlq_s32(a, vdupq_n_s32(-(k)))
#define SET1_8(k) vreinterpretq_s32_s8(vdupq_n_s8((int8_t)(k)))
#define SET1_32(k) vdupq_n_s32(k)
#define LOADI32(p) vld1q_s32((const int32_t *)(const void *)(p))
#define ZEROI() vdupq_n_s32(0)
#define ZEROF() vdupq_n_f32(0.0f)
#define CVT(v) vcvtq_f32_s32(v)
#define MULF(a, b) vmulq_f32(a, b)
#define ADDF(a, b) vaddq_f32(a, b)
#define FMAF(a, b, c) vfmaq_f32(c, a, b)
#define SET1F(f) vdupq_n_f32(f)
#define STOREF(p, v) vst1q_f32(p, v)
#endif
