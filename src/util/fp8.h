/* fp8.h: FP8 E4M3 (OCP "e4m3fn": 1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no
 * infinities, 0x7f / 0xff are NaN, largest finite 448, smallest subnormal 2^-9) <-> f32, and
 * the activation quantization every FP8 linear layer shares. KILN_HD: the same functions compile
 * for host C and CUDA device code, so the CPU backend (the reference) and the GPU kernels round
 * identically.
 *
 *   kiln_e4m3_to_f32(b)       exact decode (every e4m3 value is an f32)
 *   kiln_f32_to_e4m3(x)       round to nearest, ties to even; |x| >= 448 (and +-inf) saturate to
 *                             +-448 (torch's .to(float8_e4m3fn) after clamp(-448, 448), vLLM's
 *                             rule); NaN -> 0x7f; values below 2^-10 flush to a signed zero
 *   kiln_fp8_act_scale(amax)  dynamic activation scale of a row (or a group of a row):
 *                             max(amax / 448, 1 / (448 * 512)) (vLLM's floor, so an all-zero row
 *                             gets a finite scale)
 *   kiln_fp8_act_q(x, s)      the stored activation: kiln_e4m3_to_f32(kiln_f32_to_e4m3(x / s)),
 *                             an IEEE division (not a multiply by 1 / s)
 * W8A8 then computes y = (sum_i q_a[i] * q_w[i]) * (s_a * s_w): each product of two e4m3 values
 * is exact in f32, the sum is f32. */
#ifndef KILN_UTIL_FP8_H
#define KILN_UTIL_FP8_H
#include <stdint.h>
#include <string.h>
#include "util/hostdev.h"

#define KILN_E4M3_MAX 448.0f

static inline KILN_HD float kiln_e4m3_to_f32(uint8_t b) {
    uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
    float f;
    if (e == 0) {
        f = (float)m * 0.001953125f; /* m * 2^-9, exact */
    } else if (e == 0xfu && m == 7u) {
        uint32_t nan = 0x7fc00000u;
        memcpy(&f, &nan, 4);
    } else {
        uint32_t u = ((e + 120u) << 23) | (m << 20);
        memcpy(&f, &u, 4);
    }
    return (b & 0x80u) ? -f : f;
}

static inline KILN_HD uint8_t kiln_f32_to_e4m3(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint8_t)(sign | 0x7fu); /* NaN */
    if (a >= 0x43e00000u) return (uint8_t)(sign | 0x7eu); /* >= 448 (and inf): saturate */
    if (a < 0x3c800000u) {                                /* below 2^-6: subnormal codes 0..8 */
        float y;
        memcpy(&y, &a, 4);
        y *= 512.0f; /* exact: a power of two, result < 8 */
        uint32_t q = (uint32_t)y;
        float frac = y - (float)q; /* exact */
        if (frac > 0.5f || (frac == 0.5f && (q & 1u))) q++;
        return (uint8_t)(sign | q); /* q = 8 is 2^-6, the smallest normal's code */
    }
    /* normal: keep 3 of the 23 mantissa bits, round to nearest even at bit 20 */
    uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
    uint32_t code = (((r >> 23) - 120u) << 3) | ((r >> 20) & 7u);
    return (uint8_t)(sign | (code > 0x7eu ? 0x7eu : code));
}

static inline KILN_HD float kiln_fp8_act_scale(float amax) {
    float s = amax / KILN_E4M3_MAX;
    const float lo = 1.0f / (KILN_E4M3_MAX * 512.0f);
    return s > lo ? s : lo;
}

static inline KILN_HD float kiln_fp8_act_q(float x, float s) { return kiln_e4m3_to_f32(kiln_f32_to_e4m3(x / s)); }

#endif
