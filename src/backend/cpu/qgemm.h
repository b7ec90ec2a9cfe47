/* qgemm.h: the CPU's W x A8 product: GGUF 32-element block weights (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0) and K-quant super-blocks (Q4_K, Q5_K, Q6_K: 256 elements) against activations quantized to 8 bits per 32-element block (as llama.cpp's Q8
 * activations), exact integer dot products per block (AMX-INT8 tdpbsud for 16-row blocks, AVX-512 VNNI vpdpbusd, AVX-VNNI, AVX2
 * pmaddubsw, NEON sdot or smull + sadalp, scalar reference), each weight block read once per call for all its rows.
 *
 * Activations (kiln_q8act, made once per matmul call for all its rows): per row r and block b
 * of 32 elements, dx = amax / 127, q[i] = round-half-even(x[i] * (127 / amax)) in [-127, 127]
 * (0 when amax is 0), by one C function for every ISA, so a row's q and dx depend on that row
 * only; qsum = sum q, sdx = dx * (float)qsum.
 *
 * Weights as integers with a block scale dw (and, Q4_1 / Q5_1, an offset mw):
 *   Q4_0: nibble - 8      Q5_0: (nibble | bit << 4) - 16      Q8_0: the int8 value
 *   Q4_1: nibble, + mw    Q5_1: nibble | bit << 4, + mw
 * The arithmetic of every output (r, c), on every ISA and in every kernel (so all paths give
 * the same bits, whatever the rows of the call, the tile or the thread):
 *   isum_b = sum_i w_int[i] q[i]                    (exact int32)
 *   acc  = fma((float)isum_b, dw_b * dx_b, acc)    for b = 0, 1 ... in order (from 0)
 *   macc = fma(mw_b, sdx_b, macc)                   for b in order (Q4_1 / Q5_1 only)
 *   y = acc + macc (Q4_1 / Q5_1), else y = acc.
 * K-quants, per 32-element block j of a super-block (the activations' blocks, as above):
 *   Q4_K / Q5_K: integers q (nibble, | the qh bit << 4), then as Q4_1 / Q5_1 with
 *                dw = d * sc_j and mw = -(dmin * mn_j) (6-bit scale and min: exact f32 products)
 *   Q6_K: integers q - 32; isum_b = sc_a * isum(first 16) + sc_b * isum(last 16) (the two
 *         8-bit sub-block scales, exact int32), acc = fma((float)isum_b, d * dx_b, acc), y = acc.
 * The SIMD kernels put one output column in each lane (16 on AVX-512, 8 on AVX2): the weight
 * blocks of 16 (8) columns are transposed into 4-byte groups once per call (scratch), and each
 * activation group of 4 bytes is broadcast, so a block's integer sum needs no horizontal
 * reduction and the f32 steps above are plain lane-wise vector operations. */
#ifndef KILN_CPU_QGEMM_H
#define KILN_CPU_QGEMM_H
#include <stddef.h>
#include <stdint.h>
#include "backend/cpu/kernels.h"

#define KILN_QGEMM_COLS 16 /* most weight rows per kernel call */

/* Quantized activations of n_rows rows of n (a multiple of 32) elements, nb = n / 32 blocks. */
typedef struct kiln_q8act {
    int8_t *q;      /* [n_rows][n]: the 8-bit values */
    float *dx;      /* [n_rows][nb]: block scales */
    float *sdx;     /* [n_rows][nb]: dx * (float)qsum */
    int32_t *qsum;  /* [n_rows][nb]: sum of the block's q */
    /* the same three tile-major, [ceil(n_rows / 16)][nb][16] (row r at [r / 16][b][r % 16]),
     * for the AMX kernel's 16-row tiles: written by kiln_q8act_tile */
    float *tdx, *tsdx;
    int32_t *tqsum;
    int32_t *qs16;  /* [n_rows][2 nb]: the sums of each block's two 16-element halves of q, for the
                     * packed Q6_K kernel: written by kiln_q8act_sums16 */
    int n, nb, n_rows;
} kiln_q8act;

/* Bytes kiln_q8act_init needs for n_rows rows of n elements. */
size_t kiln_q8act_bytes(int n_rows, int n);
/* Point a at mem (64-byte aligned, kiln_q8act_bytes(n_rows, n) bytes). */
void kiln_q8act_init(kiln_q8act *a, void *mem, int n_rows, int n);
/* Quantize rows [r0, r1) of x (row stride ldx floats) into a. */
void kiln_q8act_quantize(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1);
/* Rows [r0, r1)'s qs16 (after quantizing them). */
void kiln_q8act_sums16(kiln_q8act *a, int r0, int r1);
/* Copy rows [r0, r1)'s dx, sdx and qsum into the tile-major arrays (after quantizing them). */
void kiln_q8act_tile(kiln_q8act *a, int r0, int r1);
/* The same function with the ISA's vectors (the same bits: test_cpu_qgemm), or the C one: at
 * batch 16 the C loop took ~9 % of a decode step. */
typedef void (*kiln_q8act_quantize_fn)(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1);
kiln_q8act_quantize_fn kiln_cpu_q8act_quantize_lookup(kiln_isa isa);

/* y[(r - r0) * ldy + c] for r in [r0, r1), c < nc (1..KILN_QGEMM_COLS): weight rows w + c * ldw
 * (the lookup's dtype, a->n elements) against activation rows r of a. scratch:
 * kiln_qgemm_scratch_bytes(n) bytes, 64-byte aligned (per thread). */
typedef void (*kiln_qgemm_fn)(const uint8_t *w, size_t ldw, int nc, const kiln_q8act *a, int r0, int r1, float *y,
                              size_t ldy, void *scratch);
size_t kiln_qgemm_scratch_bytes(int n);
/* The kernel of (dt, isa), or NULL (dt not one of the eight types; K-quants need n % 256 == 0). AVX-512 uses VNNI when the
 * CPU has it, else AVX-VNNI or AVX2; AVX2 uses AVX-VNNI when present. On aarch64 (KILN_ARM64)
 * the NEON level gets the NEON kernel, with sdot where the CPU has the dot-product extension
 * (HWCAP_ASIMDDP); scalar gets the scalar kernel, as on x86. Same bits everywhere. */
kiln_qgemm_fn kiln_cpu_qgemm_lookup(kiln_dtype dt, kiln_isa isa);
/* The AMX-INT8 kernel of dt (16-row blocks on tiles, the rest as kiln_cpu_qgemm_lookup's
 * AVX-512 VNNI kernel; the same bits), or NULL where the build, the CPU or the OS has no AMX
 * (kiln_cpu_has_amx) or dt has no qgemm kernel. It reads the tile-major scales of its rows
 * (kiln_q8act_tile) and takes tiles only from an r0 that is a multiple of 16 (else it runs
 * the VNNI kernel alone). */
kiln_qgemm_fn kiln_cpu_qgemm_lookup_amx(kiln_dtype dt);
/* Packed weights (the AVX-512 VNNI, AVX-VNNI and AVX2 kernels; Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0,
 * Q4_K / Q5_K / Q6_K): the per-call transposition of a group of 16 weight rows into the kernel's lane order
 * (most of a call's time at one activation row: 31 -> 115 GMAC/s without it, one core) done once
 * at load into a copy of the same size (qgemm_tile.inc, QG_PACKED, gives the layout). The packed
 * kernel's bits are the unpacked kernel's.
 *   pack:  rows w + c * ldw, c < nc (1..16), of n elements -> out, kiln_qgemm_packed_bytes(dt, n)
 *          bytes (the group's 16 rows; missing rows repeat the last);
 *   fn:    y[(r - r0) * ldy + c - lo] for r in [r0, r1), c in [lo, hi) (0 <= lo < hi <= 16) of the
 *          group packed at wp (64-byte aligned); scratch as kiln_qgemm_fn's (many rows: the
 *          group unpacked there once instead of per row tile); Q6_K on AVX-512 VNNI also reads a->qs16. */
typedef void (*kiln_qgemm_pack_fn)(const uint8_t *w, size_t ldw, int nc, int n, uint8_t *out);
typedef void (*kiln_qgemm_packed_fn)(const uint8_t *wp, int lo, int hi, const kiln_q8act *a, int r0, int r1, float *y,
                                     size_t ldy, void *scratch);
/* Bytes of one packed group of 16 rows of n elements (16 rows' bytes). */
size_t kiln_qgemm_packed_bytes(kiln_dtype dt, int n);
/* 1 and the pair for (dt, isa) where the packed kernel exists and the CPU runs it (the x86
 * kernels kiln_cpu_qgemm_lookup picks: AVX-512 VNNI, AVX-VNNI, AVX2), else 0; *sums16 (may be
 * NULL): 1 where that kernel reads a->qs16 (Q6_K on AVX-512 VNNI), so callers compute the sums
 * only then. */
int kiln_cpu_qgemm_lookup_packed(kiln_dtype dt, kiln_isa isa, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn,
                                 int *sums16);

/* 1 where the CPU has AMX-TILE and AMX-INT8 (with AVX-512 VNNI) and Linux granted this
 * process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM: a process-wide grant, asked
 * once and kept, as the CPUID answers are). */
int kiln_cpu_has_amx(void);

/* The per-ISA tables (qgemm_*.c). */
kiln_qgemm_fn kiln_qgemm_scalar(kiln_dtype dt);
#ifdef KILN_X86
void kiln_q8act_quantize_avx2(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1);
void kiln_q8act_quantize_avx512(kiln_q8act *a, const float *x, size_t ldx, int r0, int r1);
kiln_qgemm_fn kiln_qgemm_avx2(kiln_dtype dt);
kiln_qgemm_fn kiln_qgemm_avxvnni(kiln_dtype dt);
kiln_qgemm_fn kiln_qgemm_avx512(kiln_dtype dt);
int kiln_qgemm_avx512_packed(kiln_dtype dt, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn);
int kiln_qgemm_avxvnni_packed(kiln_dtype dt, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn);
int kiln_qgemm_avx2_packed(kiln_dtype dt, kiln_qgemm_pack_fn *pack, kiln_qgemm_packed_fn *fn);
kiln_qgemm_fn kiln_qgemm_amx(kiln_dtype dt);
int kiln_cpu_has_avxvnni(void);
int kiln_cpu_has_avx512vnni(void);
#endif
#ifdef KILN_ARM64
kiln_qgemm_fn kiln_qgemm_neon(kiln_dtype dt);
kiln_qgemm_fn kiln_qgemm_neondot(kiln_dtype dt);
int kiln_cpu_has_dotprod(void);
#endif

#endif
