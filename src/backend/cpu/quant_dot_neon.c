/* quant_dot_neon.c: NEON quantized dot kernels (4 f32 lanes, aarch64 baseline); the kernels
 * themselves are in quant_dot_simd.inc, shared with the AVX2 / AVX-512 files. L = 4: a 32-element
 * block is 8 vectors, each loaded as 4 bytes widened to 32-bit lanes (ld1r + two uxtl); every
 * vector goes to accumulator v % 4 of each of up to 4 rows (16 fma chains of the 32 registers).
 * Weights as the x86 paths compute them (Q4_1 / Q5_1 d q + m and the K-quants' d q - m fused),
 * so the values agree with theirs and with the scalar dequantization within one rounding. */
#include <arm_neon.h>
#include <string.h>
#include "backend/cpu/quant_impl.h"

typedef float32x4_t VF;
typedef int32x4_t VI;
#define L 4
#define FN(name) name##_neon
#define VZERO() vdupq_n_f32(0.0f)
#define VSET1(f) vdupq_n_f32(f)
#define VLOAD(p) vld1q_f32(p)
#define VADD(a, b) vaddq_f32(a, b)
#define VMUL(a, b) vmulq_f32(a, b)
#define VFMA(a, b, c) vfmaq_f32(c, a, b)
/* a b - c, one rounding (fmsub): fma(a, b, -c) */
#define VFMSUB(a, b, c) vfmaq_f32(vnegq_f32(c), a, b)
#define VCVT(i) vcvtq_f32_s32(i)

/* 4 bytes at p, zero- / sign-extended to 4 int32 lanes (exactly 4 bytes read: the last block of
 * a row may end a mapping) */
static inline int32x4_t iload_u8(const void *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    uint16x8_t h = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(u)));
    return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h)));
}
static inline int32x4_t iload_i8(const void *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    int16x8_t h = vmovl_s8(vreinterpret_s8_u32(vdup_n_u32(u)));
    return vmovl_s16(vget_low_s16(h));
}
#define ILOAD_U8(p) iload_u8(p)
#define ILOAD_I8(p) iload_i8(p)
#define ISET1(k) vdupq_n_s32(k)
#define IAND(a, b) vandq_s32(a, b)
#define IOR(a, b) vorrq_s32(a, b)
#define ISUB(a, b) vsubq_s32(a, b)
/* logical shifts: ushl by a negative count shifts right */
#define ISRLV(a, b) vreinterpretq_s32_u32(vshlq_u32(vreinterpretq_u32_s32(a), vnegq_s32(b)))
#define ISRLI(a, k) ISRLV(a, vdupq_n_s32(k))
#define ISLLI(a, k) vshlq_s32(a, vdupq_n_s32(k))
#define IIOTA() ((int32x4_t){0, 1, 2, 3})
#define IBITS(v, s, mask) vandq_s32(ISRLI(v, s), vdupq_n_s32(mask))

/* one f16 -> f32 (fcvt: exact) */
static inline float f16_bits_to_f32(uint16_t h) {
    __fp16 f;
    memcpy(&f, &h, 2);
    return (float)f;
}
#define H2F(h) f16_bits_to_f32(h)

/* horizontal sum in a fixed order: (l0 + l2) + (l1 + l3) */
static inline float hsum_neon(float32x4_t v) {
    float32x2_t t = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}
#define VREDUCE(v) hsum_neon(v)

#include "backend/cpu/quant_dot_simd.inc"

kiln_dot_fn kiln_quant_dot_neon(kiln_dtype dt) { return lookup_neon(dt); }
kiln_dotw_fn kiln_quant_dotw_neon(kiln_dtype dt) { return lookup_w_neon(dt); }
