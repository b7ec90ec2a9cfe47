/* quant_impl.h: private to the quant_dot*.c files: GGML block layouts and the per-ISA tables.
 *
 * Block layouts (little-endian, f16 = IEEE half):
 *   Q8_0 (32):  f16 d, i8 q[32]                              x = d * q
 *   Q4_0 (32):  f16 d, u8 qs[16]                             x[j] = d * ((qs[j] & 15) - 8),
 *                                                            x[j+16] = d * ((qs[j] >> 4) - 8)
 *   Q4_1 (32):  f16 d, f16 m, u8 qs[16]                      x = d * q + m (nibbles as Q4_0)
 *   Q4_K (256): f16 d, f16 dmin, u8 scales[12], u8 qs[128]   8 sub-blocks of 32 with 6-bit
 *               scale sc and min mn: x = (d*sc) * q - (dmin*mn); sub-blocks 2c, 2c+1 are the
 *               low / high nibbles of qs[32c .. 32c+31]
 *   Q5_K (256): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]: as Q4_K, plus bit s of
 *               qh[l] as bit 4 of element l of sub-block s
 *   Q6_K (256): u8 ql[128], u8 qh[64], i8 scales[16], f16 d: two halves of 128; in half h,
 *               element 32k+l (k<4, l<32) is (low nibble of ql[64h + l + 32(k&1)] for k<2, high
 *               nibble for k>=2) | ((qh[32h + l] >> 2k) & 3) << 4, minus 32, times
 *               d * scales[8h + 2k + l/16]
 * The 12 scale bytes of Q4_K/Q5_K: for j<4 sc = s[j]&63, mn = s[j+4]&63; for j>=4
 * sc = (s[j+4]&15) | (s[j-4]>>6)<<4, mn = (s[j+4]>>4) | (s[j]>>6)<<4.
 */
#ifndef KILN_CPU_QUANT_IMPL_H
#define KILN_CPU_QUANT_IMPL_H
#include <stdint.h>
#include "backend/cpu/kernels.h"

static inline void kiln_qk_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Dot kernels of one ISA for dtype dt; NULL where none. */
kiln_dot_fn kiln_quant_dot_avx2(kiln_dtype dt);
kiln_dot_fn kiln_quant_dot_avx512(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_avx2(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_avx512(kiln_dtype dt);
kiln_deq_fn kiln_quant_deq_avx512(kiln_dtype dt);
kiln_tile_fn kiln_quant_tile_avx512(void);
kiln_tile_phase_fn kiln_quant_tile_phase_avx512(void);

#endif
