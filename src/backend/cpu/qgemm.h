/* qgemm.h: the CPU's W4/W8 x A8 product: GGUF 32-element block weights (Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0) against activations quantized to 8 bits per 32-element block, integer dot
 * products per block (AVX-512 VNNI vpdpbusd, AVX-VNNI, AVX2 pmaddubsw, scalar reference).
 *
 * Activations (kiln_q8act, made once per matmul call for all its rows): per row r and block b
 * of 32 elements, d = amax / 127, q[i] = round-half-even(x[i] * (127 / amax)) in [-127, 127]
 * (0 when amax is 0), the same f32 operations on every ISA (one C function), so the q values
 * and d of a row depend on that row only.
 *
 * Weights as unsigned integers u with a per-block scale dw and offset mw, value = dw * u + mw:
 *   Q4_0: u = nibble,            mw = -8 dw      Q4_1: u = nibble,            mw = m
 *   Q5_0: u = nibble | bit << 4, mw = -16 dw     Q5_1: u = nibble | bit << 4, mw = m
 *   Q8_0: signed s (no offset):  dw * s          (pmaddubsw needs |s| and sign(q, s))
 * so per output (r, c): y = sum_b dw_b dx_b (sum_i u_i q_i) + sum_b mw_b (dx_b sum_i q_i).
 * The integer sums are exact; the f32 part has an order fixed per ISA (see each kernel file)
 * that depends on nothing but the row, the column and n: not on the tile, the row count or
 * the threads, so a row's result is the same alone (T = 1) or in a batch (invariants I5/I6).
 * The SIMD kernels' f32 order differs from the scalar reference's (tests bound the gap). */
#ifndef KILN_CPU_QGEMM_H
#define KILN_CPU_QGEMM_H
#include <stddef.h>
#include <stdint.h>
#include "backend/cpu/kernels.h"

/* Quantized activations of n_rows rows of n (a multiple of 32) elements. Rows are padded with
 * zeros (q to nq = n rounded up to 64 bytes, dxe to nq / 4 floats, sdx to nbp = blocks rounded
 * up to 16), so SIMD kernels may read whole 64-byte steps and 16-float vectors. */
typedef struct kiln_q8act {
    int8_t *q;    /* [n_rows][nq]: the 8-bit values */
    float *dxe;   /* [n_rows][nq / 4]: d of block b, 8 times (at 8b .. 8b + 7): one per int32 lane */
    float *sdx;   /* [n_rows][nbp]: d * sum(q) of block b (the offset term's factor) */
    int n, nq, nbp, n_rows;
} kiln_q8act;

/* Bytes kiln_q8act_init needs for n_rows rows of n elements. */
size_t kiln_q8act_bytes(int n_rows, int n);
/* Point a at mem (64-byte aligned, kiln_q8act_bytes(n_rows, n) bytes). */
void kiln_q8act_init(kiln_q8act *a, void *mem, int n_rows, int n);
/* Quantize rows [r0, r1) of x (row stride ldx floats) into a. */
void kiln_q8act_quantize(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1);

/* y[r * ldy + c] for r in [r0, r1), c < nc (1..4): weight rows w + c * ldw (dtype of the
 * lookup, n = a->n elements) against activation rows r of a. scratch: kiln_qgemm_scratch_bytes(n)
 * bytes, 64-byte aligned (per thread). */
typedef void (*kiln_qgemm_fn)(const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1, float *y,
                              size_t ldy, void *scratch);
size_t kiln_qgemm_scratch_bytes(int n);
/* The kernel of (dt, isa), or NULL (dt not one of the five types). AVX-512 uses VNNI when the
 * CPU has it, else the AVX2 kernel; AVX2 uses AVX-VNNI when present (the same bits as
 * pmaddubsw: the int32 lanes are equal). */
kiln_qgemm_fn kiln_cpu_qgemm_lookup(kiln_dtype dt, kiln_isa isa);

/* The per-ISA tables (qgemm_*.c). */
kiln_qgemm_fn kiln_qgemm_scalar(kiln_dtype dt);
#ifdef KILN_X86
kiln_qgemm_fn kiln_qgemm_avx2(kiln_dtype dt);
kiln_qgemm_fn kiln_qgemm_avxvnni(kiln_dtype dt);
kiln_qgemm_fn kiln_qgemm_avx512(kiln_dtype dt);
int kiln_cpu_has_avxvnni(void);
int kiln_cpu_has_avx512vnni(void);
#endif

/* The offsets mw of nc weight rows -> mw[c * nbp + b] (zero for b >= blocks), for the kernels
 * that run the offset term as a separate f32 dot over the blocks. Returns 0 when dt has none
 * (Q8_0). */
int kiln_qgemm_offsets(kiln_dtype dt, const uint8_t *w, size_t ldw, int nc, int n, int nbp, float *mw);

#endif
