/* quant.h: GGUF quantized block formats: layouts, the scale unpacking the kernels share, and
 * scalar dequantization (the reference every backend's quantized kernels are checked against).
 *
 * Block layouts (little-endian, f16 = IEEE half):
 *   Q8_0 (32):  f16 d, i8 q[32]                              x = d * q
 *   Q4_0 (32):  f16 d, u8 qs[16]                             x[j] = d * ((qs[j] & 15) - 8),
 *                                                            x[j+16] = d * ((qs[j] >> 4) - 8)
 *   Q4_1 (32):  f16 d, f16 m, u8 qs[16]                      x = d * q + m (nibbles as Q4_0)
 *   Q5_0 (32):  f16 d, u8 qh[4], u8 qs[16]                 nibbles as Q4_0 with bit j of the
 *               little-endian u32 qh as bit 4 of element j: x = d * (q - 16)
 *   Q5_1 (32):  f16 d, f16 m, u8 qh[4], u8 qs[16]          x = d * q + m (q as Q5_0)
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
#ifndef KILN_FORMAT_QUANT_H
#define KILN_FORMAT_QUANT_H
#include <stdint.h>
#include "format/dtype.h"

static inline void kiln_qk_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* One block of dt -> f32 (y[kiln_dtype_block_elems(dt)]); NULL for a type that is not quantized. */
typedef void (*kiln_dequant_block_fn)(const uint8_t *b, float *y);
kiln_dequant_block_fn kiln_dequant_block(kiln_dtype dt);
/* One row of n elements of a quantized dt -> f32: 0, or -1 when dt is not a quantized type or n
 * is not a whole number of blocks. */
int kiln_dequant_row(kiln_dtype dt, const void *row, int64_t n, float *out);
/* One row of n elements of any float or quantized dt -> f32 (embedding lookups, references):
 * KILN_OK, or KILN_ERR_UNSUPPORTED for a type that is neither (I32). */
int kiln_row_to_f32(kiln_dtype dt, const void *row, int64_t n, float *out);

#endif
