/* quantize.h: f32 rows -> GGUF blocks (and the float types), the inverse of quant.h's
 * dequantization; `kiln quantize` and the tests use it. No importance matrix.
 *
 *   Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: GGML's reference rounding (max / min of the block, one scale),
 *     in the f32 operations of the gguf Python package's quantizers (gguf.quants), so the blocks
 *     are bit-identical to theirs (this file is ISO C: no FMA contraction).
 *   Q4_K, Q5_K: per 32-element sub-block a weighted least-squares fit x ~ s*q - m over a few
 *     candidate scales (weights |x| + rms of the sub-block; the idea of GGML's
 *     make_qkx2_quants), then the 6-bit scales / mins against the block's f16 d / dmin, and the
 *     quants re-rounded against the stored scales.
 *   Q6_K: per 16-element sub-block a symmetric fit x ~ s*q, q in [-32, 31], weighted by x^2
 *     over 19 candidate scales (the idea of GGML's make_qx_quants), int8 scales against the
 *     block's f16 d, quants re-rounded against the stored scales.
 */
#ifndef KILN_FORMAT_QUANTIZE_H
#define KILN_FORMAT_QUANTIZE_H
#include <stdint.h>
#include "format/dtype.h"

/* x[n] -> kiln_dtype_row_bytes(dt, n) bytes at out. dt: a GGUF block type kiln knows, or
 * F32 / F16 / BF16 (round-to-nearest-even). 0, or -1 when dt is another type or n is not a
 * whole number of blocks. */
int kiln_quantize_row(kiln_dtype dt, const float *x, int64_t n, void *out);
/* rows x cols, row-major, each row as kiln_quantize_row (rows are whole blocks). */
int kiln_quantize_rows(kiln_dtype dt, const float *x, int64_t rows, int64_t cols, void *out);

#endif
